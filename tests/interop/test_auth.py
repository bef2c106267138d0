"""Client authentication, checked on both servers with the same flags: nats-server's behaviour
is the expectation (raw wire and nats-py, right and wrong credentials, bcrypt hashes)."""

from __future__ import annotations

import asyncio
import time

import bcrypt
import nats
import nats.errors
import pytest

from tests.interop.wire import WireClient
from tests.support.broker import Broker

pytestmark = pytest.mark.interop

VIOLATION = b"-ERR 'Authorization Violation'\r\n"
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()


@pytest.fixture(params=("nats-server", "mq9cluster"))
def secured(request: pytest.FixtureRequest, tmp_path):
    """Start a broker of each kind with the given auth flags."""
    started: list[Broker] = []

    def start(*args: str) -> Broker:
        broker = Broker(request.param, tmp_path, list(args)).start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


def _connect_line(**options) -> bytes:
    import json
    return b"CONNECT " + json.dumps({"verbose": False, **options}).encode() + b"\r\nPING\r\n"


@pytest.mark.parametrize("password", ["s3cret", HASH], ids=["plain", "bcrypt"])
def test_user_password_on_the_wire(secured, password):
    broker = secured("--user", "alice", "--pass", password)
    good = WireClient(broker.port)
    assert good.info["auth_required"] is True
    good.send(_connect_line(user="alice", **{"pass": "s3cret"}))
    assert good.read_line() == b"PONG\r\n"
    for options in ({"user": "alice", "pass": "wrong"}, {"user": "bob", "pass": "s3cret"}, {}):
        bad = WireClient(broker.port)
        bad.send(_connect_line(**options))
        assert bad.read_all_until_close() == VIOLATION
    assert good.ping_pong()


@pytest.mark.parametrize("op", [b"PING\r\n", b"SUB foo 1\r\n", b"PUB foo 2\r\nhi\r\n"])
def test_any_op_before_connect_is_a_violation(secured, op):
    broker = secured("--auth", "tok")
    client = WireClient(broker.port)
    client.send(op)
    assert client.read_all_until_close() == VIOLATION


def test_token(secured):
    broker = secured("--auth", "tok")
    good = WireClient(broker.port)
    good.send(_connect_line(auth_token="tok"))
    assert good.read_line() == b"PONG\r\n"
    bad = WireClient(broker.port)
    bad.send(_connect_line(auth_token="nope"))
    assert bad.read_all_until_close() == VIOLATION


def test_no_connect_in_time_is_closed(secured):
    broker = secured("--auth", "tok")
    client = WireClient(broker.port, timeout=5)
    started = time.monotonic()
    got = client.read_all_until_close()
    assert got == b"-ERR 'Authentication Timeout'\r\n"
    assert 1.5 < time.monotonic() - started < 4.5


def test_nats_py_right_and_wrong_credentials(secured):
    broker = secured("--user", "alice", "--pass", HASH)
    host = f"127.0.0.1:{broker.port}"

    async def scenario() -> None:
        nc = await nats.connect(f"nats://alice:s3cret@{host}", allow_reconnect=False)
        sub = await nc.subscribe("greet")
        await nc.publish("greet", b"hello")
        msg = await sub.next_msg(timeout=2)
        assert msg.data == b"hello"
        await nc.close()
        with pytest.raises(nats.errors.Error, match="[Aa]uthorization"):
            await nats.connect(f"nats://alice:wrong@{host}", allow_reconnect=False, connect_timeout=2)
        nc = await nats.connect(f"nats://{host}", token=None, user="alice", password="s3cret",
                                allow_reconnect=False)
        if broker.kind == "mq9cluster":  # nats-server 2.9 shows it only with /connz?auth=1
            connz = broker.http_json("/connz")["connections"]
            assert [c.get("authorized_user") for c in connz] == ["alice"]
        await nc.close()

    asyncio.run(scenario())
