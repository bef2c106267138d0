"""nats-py (PyPI `nats-py`) runs every interop scenario against each broker."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.errors import ConnectionClosedError, NoRespondersError

from tests.support.nats_client import collect, connect, until

pytestmark = pytest.mark.interop

SCENARIO_TIMEOUT = 30.0


async def scenario_connect(server):
    nc = await connect(server)
    assert nc.is_connected
    assert nc.connected_url.port == server.port
    assert nc.max_payload > 0
    assert nc.connected_server_version.major == 2
    assert await nc.rtt() >= 0
    await nc.close()
    assert nc.is_closed


async def scenario_pubsub(server):
    nc = await connect(server)
    msgs = await collect(nc, "interop.pubsub")
    payloads = [b"hello", b"", b"x\r\ny", bytes(i % 251 for i in range(64 * 1024))]
    for payload in payloads:
        await nc.publish("interop.pubsub", payload)
    await until(lambda: len(msgs) >= len(payloads), "all messages")
    await nc.flush()
    assert [m.subject for m in msgs] == ["interop.pubsub"] * len(payloads)
    assert [m.data for m in msgs] == payloads
    await nc.close()


async def scenario_wildcard(server):
    nc = await connect(server)
    star = await collect(nc, "wc.*.x")
    full = await collect(nc, "wc.>")
    for subject in ["wc.a.x", "wc.b.y", "wc.a.b.x", "wc", "wcx.a.x", "wc.z.x"]:
        await nc.publish(subject, subject.encode())
    # wc.z.x matches both and is published last: once it arrived, nothing else is due.
    await until(lambda: len(star) >= 2 and len(full) >= 4, "wildcard deliveries")
    assert [(m.subject, m.data.decode()) for m in star] == [("wc.a.x", "wc.a.x"), ("wc.z.x", "wc.z.x")]
    assert [m.subject for m in full] == ["wc.a.x", "wc.b.y", "wc.a.b.x", "wc.z.x"]
    assert [m.data.decode() for m in full] == ["wc.a.x", "wc.b.y", "wc.a.b.x", "wc.z.x"]
    await nc.close()


async def scenario_queue(server):
    n = 90
    members = [await connect(server) for _ in range(3)]
    seen = [await collect(nc, "q.job", queue="workers") for nc in members]
    for nc in members:
        await nc.flush()
    pub = await connect(server)
    for i in range(n):
        await pub.publish("q.job", str(i).encode())
    await pub.flush()
    await until(lambda: sum(map(len, seen)) >= n, f"{n} queue deliveries")
    await asyncio.sleep(0.2)  # a duplicate would arrive within this grace period
    assert sorted(int(m.data) for s in seen for m in s) == list(range(n))
    assert sum(1 for s in seen if s) >= 2, f"one member got everything: {[len(s) for s in seen]}"
    for nc in [*members, pub]:
        await nc.close()


async def scenario_request(server):
    svc = await connect(server)

    async def echo(msg):
        await msg.respond(b"echo:" + msg.data)

    await svc.subscribe("svc.echo", cb=echo)
    await svc.flush()
    nc = await connect(server)
    for i in range(5):
        reply = await nc.request("svc.echo", f"ping-{i}".encode(), timeout=2)
        assert reply.data == f"echo:ping-{i}".encode()
    await nc.close()
    await svc.close()


async def scenario_headers(server):
    nc = await connect(server)
    msgs = await collect(nc, "interop.headers")
    headers = {"X-Interop-Key": "value one", "X-Interop-Colon": "a:b c"}
    await nc.publish("interop.headers", b"body", headers=headers)
    await nc.publish("interop.headers", b"", headers=headers)
    await until(lambda: len(msgs) >= 2, "two messages with headers")
    assert [m.data for m in msgs] == [b"body", b""]
    for m in msgs:
        assert m.headers == headers
    await nc.close()


async def scenario_no_responders(server):
    nc = await connect(server)
    start = time.monotonic()
    with pytest.raises(NoRespondersError):
        await nc.request("nobody.home", b"?", timeout=3)
    assert time.monotonic() - start < 1.0
    await nc.close()


async def scenario_autounsub(server):
    nc = await connect(server)
    msgs: list = []

    async def cb(msg):
        msgs.append(msg)

    sub = await nc.subscribe("interop.max", cb=cb)
    await sub.unsubscribe(limit=3)  # UNSUB sid 3 (subscribe(max_msgs=) is client-side only)
    marker = await collect(nc, "interop.max.done")
    for i in range(10):
        await nc.publish("interop.max", str(i).encode())
    await nc.publish("interop.max.done", b"")
    await until(lambda: marker, "marker message")
    assert [m.data for m in msgs] == [b"0", b"1", b"2"]
    # The server must stop delivering too: only 3 + the marker reached the connection.
    assert nc.stats["in_msgs"] == 4
    await nc.close()


async def scenario_reconnect(server):
    reconnected = asyncio.Event()

    async def on_reconnect():
        reconnected.set()

    nc = await connect(server, reconnected_cb=on_reconnect)
    msgs = await collect(nc, "interop.reconnect")
    await nc.publish("interop.reconnect", b"before")
    await until(lambda: msgs, "message before restart")
    await asyncio.to_thread(server.restart)
    await asyncio.wait_for(reconnected.wait(), 5)
    await nc.flush()
    other = await connect(server)
    await other.publish("interop.reconnect", b"after")
    await other.flush()
    await until(lambda: len(msgs) >= 2, "message after restart")
    assert [m.data for m in msgs] == [b"before", b"after"]
    assert nc.stats["reconnects"] >= 1
    await other.close()
    await nc.close()


async def scenario_drain(server):
    n = 20
    nc = await connect(server)
    handled: dict[str, list[int]] = {"drain.a": [], "drain.b": []}

    async def slow(msg):
        await asyncio.sleep(0.005)  # slow consumer: messages queue up client-side
        handled[msg.subject].append(int(msg.data))

    sub_a = await nc.subscribe("drain.a", cb=slow)
    await nc.subscribe("drain.b", cb=slow)
    await nc.flush()
    pub = await connect(server)
    for i in range(n):
        await pub.publish("drain.a", str(i).encode())
        await pub.publish("drain.b", str(i).encode())
    await pub.flush()
    await until(lambda: handled["drain.a"], "first message on drain.a")
    await sub_a.drain()
    assert handled["drain.a"] == list(range(n))
    await nc.drain()
    assert handled["drain.b"] == list(range(n))
    assert nc.is_closed
    with pytest.raises(ConnectionClosedError):
        await nc.publish("drain.a", b"late")
    await pub.close()


SCENARIOS = {name.removeprefix("scenario_"): fn for name, fn in globals().items() if name.startswith("scenario_")}


def test_nats_py(server, scenario):
    asyncio.run(asyncio.wait_for(SCENARIOS[scenario](server), SCENARIO_TIMEOUT))
