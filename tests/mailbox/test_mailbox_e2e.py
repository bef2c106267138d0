"""Dialect 1 end to end: a real broker process driven by nats-py."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.interop.wire import WireClient
from tests.support.nats_client import ORDER, collect, connect, create, request, run, until

pytestmark = pytest.mark.timeout(90)

def test_offline_backlog_in_priority_order_then_live(mq9):
    broker = mq9()

    async def scenario():
        nc = await connect(broker)
        reply = await request(nc, "$mq9.AI.MAILBOX.CREATE", b"{}")
        assert reply["is_new"] is True and len(reply["mail_address"]) >= 26
        addr = reply["mail_address"]
        sent = []
        for i, level in enumerate(["normal", "low", "critical", "urgent", "normal", "critical", "low", "urgent"]):
            subject = f"$mq9.AI.MAILBOX.{addr}" if level == "normal" and i == 0 else f"$mq9.AI.MAILBOX.{addr}.{level}"
            ack = await request(nc, subject, f"{level}-{i}".encode())
            assert set(ack) == {"msg_id"}
            sent.append((level, f"{level}-{i}", ack["msg_id"]))
        assert [s[2] for s in sent] == list(range(1, 9))
        got = await collect(nc, f"$mq9.AI.MAILBOX.{addr}.*")
        await until(lambda: len(got) == 8, "backlog")
        expected = sorted(sent, key=lambda s: (ORDER.index(s[0]), s[2]))
        assert [m.data.decode() for m in got] == [s[1] for s in expected]
        assert [m.subject for m in got] == [f"$mq9.AI.MAILBOX.{addr}.{s[0]}" for s in expected]
        assert [m.headers["mq9-msg-id"] for m in got] == [str(s[2]) for s in expected]
        assert [m.headers["mq9-priority"] for m in got] == [s[0] for s in expected]
        assert all(abs(int(m.headers["mq9-ts"]) - time.time() * 1000) < 60_000 for m in got)
        ack = await request(nc, f"$mq9.AI.MAILBOX.{addr}.critical", b"live")
        await until(lambda: len(got) == 9, "live message")
        assert got[-1].data == b"live" and got[-1].headers["mq9-msg-id"] == str(ack["msg_id"])
        await asyncio.sleep(0.2)
        assert len(got) == 9
        await nc.close()

    run(scenario())


def test_no_gap_no_duplicate_while_sending_during_subscribe(mq9):
    broker = mq9()

    async def scenario():
        sender, receiver = await connect(broker), await connect(broker)
        addr = await create(sender)
        total = 600

        async def produce():
            for i in range(total):
                await sender.publish(f"$mq9.AI.MAILBOX.{addr}", str(i).encode())
                if i % 50 == 0:
                    await sender.flush()
                    await asyncio.sleep(0.005)
            await sender.flush()

        producing = asyncio.ensure_future(produce())
        await asyncio.sleep(0.05)
        got = await collect(receiver, f"$mq9.AI.MAILBOX.{addr}.*")
        await producing
        await until(lambda: len(got) >= total, "all messages")
        await asyncio.sleep(0.3)
        values = [int(m.data) for m in got]
        assert values == list(range(total))  # one level: FIFO, no gap, no duplicate
        await sender.close()
        await receiver.close()

    run(scenario())


def test_two_subscribers_both_get_everything_and_one_level_filter(mq9):
    broker = mq9()

    async def scenario():
        nc = await connect(broker)
        addr = await create(nc)
        a = await collect(nc, f"$mq9.AI.MAILBOX.{addr}.*")
        b = await collect(nc, f"$mq9.AI.MAILBOX.{addr}.*")
        crit = await collect(nc, f"$mq9.AI.MAILBOX.{addr}.critical")
        for i in range(20):
            await request(nc, f"$mq9.AI.MAILBOX.{addr}.{ORDER[i % 4]}", str(i).encode())
        await until(lambda: len(a) == 20 and len(b) == 20 and len(crit) == 5, "fan-out")
        assert [m.data for m in a] == [m.data for m in b] == [str(i).encode() for i in range(20)]
        assert [m.data for m in crit] == [str(i).encode() for i in range(0, 20, 4)]
        await nc.close()

    run(scenario())


def test_queue_group_of_three_gets_each_of_1000_once_and_resumes(mq9):
    broker = mq9()

    async def scenario():
        producer = await connect(broker)
        addr = await create(producer, public=True, name="jobs.queue", desc="work")
        workers = [await connect(broker) for _ in range(3)]
        inboxes = [await collect(w, f"$mq9.AI.MAILBOX.{addr}.*", queue="workers") for w in workers]
        for w in workers:
            await w.flush()
        for i in range(1000):
            await producer.publish(f"$mq9.AI.MAILBOX.{addr}", str(i).encode())
        await producer.flush()
        await until(lambda: sum(map(len, inboxes)) >= 1000, "1000 deliveries", 20)
        await asyncio.sleep(0.3)
        values = sorted(int(m.data) for inbox in inboxes for m in inbox)
        assert values == list(range(1000))
        assert sum(1 for inbox in inboxes if inbox) >= 2
        for w in workers:
            await w.close()
        await asyncio.sleep(0.3)  # group progress is proposed and committed
        for i in range(1000, 1010):
            await request(producer, f"$mq9.AI.MAILBOX.{addr}", str(i).encode())
        late = await connect(broker)
        again = await collect(late, f"$mq9.AI.MAILBOX.{addr}.*", queue="workers")
        await until(lambda: len(again) >= 10, "resumed group")
        await asyncio.sleep(0.3)
        assert sorted(int(m.data) for m in again) == list(range(1000, 1010))
        fresh = await collect(late, f"$mq9.AI.MAILBOX.{addr}.*", queue="newcomers")
        await until(lambda: len(fresh) >= 1010, "a new group starts at the oldest message")
        await late.close()
        await producer.close()

    run(scenario())


def test_public_list_ttl_expiry_and_watch_events(mq9):
    broker = mq9("--expiry-interval", "0.2")

    async def scenario():
        nc = await connect(broker)
        await create(nc, public=True, name="svc.permanent", desc="stays")
        events = await collect(nc, "$mq9.AI.PUBLIC.LIST")
        await until(lambda: len(events) == 1, "existing public mailbox announced")
        addr = await create(nc, public=True, name="svc.heartbeat", ttl=1, desc="worker 7")
        await request(nc, f"$mq9.AI.MAILBOX.{addr}", b"beat")
        listing = await request(nc, "$mq9.AI.PUBLIC.LIST")
        names = {m["mail_address"]: m for m in listing["mailboxes"]}
        assert set(names) == {"svc.permanent", "svc.heartbeat"}
        assert names["svc.heartbeat"]["ttl"] == 1
        assert names["svc.heartbeat"]["expires_at"] == names["svc.heartbeat"]["created_at"] + 1000
        await until(lambda: len(events) >= 3, "expired event", 5)
        decoded = [json.loads(m.data) for m in events]
        assert [(e["event"], e["mail_address"]) for e in decoded] == [
            ("created", "svc.permanent"), ("created", "svc.heartbeat"), ("expired", "svc.heartbeat")]
        assert decoded[1]["desc"] == "worker 7"
        gone = await request(nc, f"$mq9.AI.MAILBOX.{addr}", b"late")
        assert gone == {"error": "mailbox svc.heartbeat does not exist"}
        listing = await request(nc, "$mq9.AI.PUBLIC.LIST", b"{}")
        assert [m["mail_address"] for m in listing["mailboxes"]] == ["svc.permanent"]
        await nc.close()

    run(scenario())


def test_public_create_twice_is_idempotent(mq9):
    broker = mq9()

    async def scenario():
        nc = await connect(broker)
        first = await request(nc, "$mq9.AI.MAILBOX.CREATE", b'{"public": true, "name": "team.bot", "ttl": 60, "desc": "a"}')
        second = await request(nc, "$mq9.AI.MAILBOX.CREATE", b'{"public": true, "name": "team.bot", "ttl": 5, "desc": "b"}')
        assert first["is_new"] is True and second["is_new"] is False
        [box] = (await request(nc, "$mq9.AI.PUBLIC.LIST"))["mailboxes"]
        assert (box["ttl"], box["desc"]) == (60, "a")
        await nc.close()

    run(scenario())


@pytest.mark.parametrize(("body", "error_part"), [
    (b"{not json", "malformed JSON"),
    (b"[1,2]", "JSON object"),
    (b'{"public": true}', "needs a name"),
    (b'{"public": true, "name": "Bad Name"}', "invalid mail address"),
    (b'{"public": true, "name": "ops.urgent"}', "priority word"),
    (b'{"public": true, "name": "a..b"}', "invalid mail address"),
    (b'{"ttl": -1}', "ttl"),
    (b'{"ttl": "10"}', "ttl"),
    (b'{"ttl": 99999999999}', "over the limit"),
    (b'{"name": "x"}', "only for public"),
    (b'{"bogus": 1}', "unknown create option"),
])
def test_bad_create_requests_create_nothing(mq9, body, error_part):
    broker = mq9()

    async def scenario():
        nc = await connect(broker)
        reply = await request(nc, "$mq9.AI.MAILBOX.CREATE", body)
        assert error_part in reply["error"]
        assert (await request(nc, "$mq9.AI.PUBLIC.LIST"))["mailboxes"] == []
        await nc.close()

    run(scenario())


def test_bad_sends_and_oversize_payloads(mq9):
    broker = mq9("--max-payload", "4096")

    async def scenario():
        nc = await connect(broker)
        assert await request(nc, "$mq9.AI.MAILBOX.nobody.home", b"x") == {"error": "mailbox nobody.home does not exist"}
        bad = await request(nc, "$mq9.AI.MAILBOX.Not-Valid", b"x")
        assert "invalid mail address" in bad["error"]
        addr = await create(nc)
        with pytest.raises(Exception):
            await nc.publish(f"$mq9.AI.MAILBOX.{addr}", b"x" * 5000)  # the client refuses over max_payload
        ok = await request(nc, f"$mq9.AI.MAILBOX.{addr}", b"y" * 4096)
        assert ok == {"msg_id": 1}
        await nc.close()

    run(scenario())


def test_oversize_payload_on_the_wire_is_refused(mq9):
    broker = mq9("--max-payload", "4096")
    c = WireClient(broker.port)
    c.handshake()
    c.send(b"PUB $mq9.AI.MAILBOX.someone 5000\r\n")
    assert c.read_all_until_close() == b"-ERR 'Maximum Payload Violation'\r\n"


@pytest.mark.parametrize("subject", [
    b"$mq9.AI.MAILBOX.>", b"$mq9.AI.>", b"$mq9.>", b"$mq9.AI.MAILBOX.*.*", b"$mq9.AI.MAILBOX.*",
])
def test_forbidden_subscriptions_get_permission_error_and_stay_open(mq9, subject):
    broker = mq9()
    c = WireClient(broker.port)
    c.handshake()
    c.send(b"SUB " + subject + b" 1\r\n")
    assert c.read_line() == b"-ERR 'Permissions Violation for Subscription to \"" + subject + b"\"'\r\n"
    assert c.ping_pong()


def test_mailbox_traffic_is_not_routed_as_plain_nats(mq9):
    broker = mq9()

    async def scenario():
        nc = await connect(broker)
        spy = await collect(nc, ">")
        addr = await create(nc)
        await request(nc, f"$mq9.AI.MAILBOX.{addr}.urgent", b"secret")
        mine = await collect(nc, f"$mq9.AI.MAILBOX.{addr}.*")
        await until(lambda: len(mine) == 1, "delivery")
        await asyncio.sleep(0.2)
        assert not [m for m in spy if m.subject.startswith("$mq9.AI.MAILBOX.")]
        assert [m.data for m in mine] == [b"secret"]
        await nc.close()

    run(scenario())


def test_client_without_headers_gets_plain_msg(mq9):
    broker = mq9()

    async def scenario():
        nc = await connect(broker)
        addr = await create(nc)
        await request(nc, f"$mq9.AI.MAILBOX.{addr}.low", b"plain")
        await nc.close()
        return addr

    addr = run(scenario())
    c = WireClient(broker.port)
    c.handshake(headers=False)
    c.send(f"SUB $mq9.AI.MAILBOX.{addr}.* 9\r\n".encode())
    expected = f"MSG $mq9.AI.MAILBOX.{addr}.low 9 5\r\nplain\r\n".encode()
    assert c.read_exactly(expected) == expected


def test_subscription_before_create_gets_messages_once_created(mq9):
    broker = mq9()

    async def scenario():
        nc = await connect(broker)
        early = await collect(nc, "$mq9.AI.MAILBOX.late.box.*")
        await nc.flush()
        await create(nc, public=True, name="late.box")
        await request(nc, "$mq9.AI.MAILBOX.late.box", b"hello")
        await until(lambda: len(early) == 1, "delivery after create")
        await nc.close()

    run(scenario())
