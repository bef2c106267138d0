"""TLS for clients: plain INFO with tls_required, then the handshake, as nats-server does; a CA
made by the test signs the certificates."""

from __future__ import annotations

import asyncio
import ssl

import nats
import pytest

from tests.interop.wire import WireClient
from tests.support.broker import Broker
from tests.support.certs import make_ca


@pytest.fixture
def ca(tmp_path):
    return make_ca(tmp_path)


def _tls_args(ca, verify: bool = False) -> list[str]:
    args = ["--tls", "--tlscert", str(ca.server_cert), "--tlskey", str(ca.server_key)]
    if verify:
        args += ["--tlscacert", str(ca.ca_cert), "--tlsverify"]
    return args


def _client_context(ca, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.ca_cert))
    if with_cert:
        context.load_cert_chain(str(ca.client_cert), str(ca.client_key))
    return context


async def _round_trip(url: str, context: ssl.SSLContext) -> bytes:
    nc = await nats.connect(url, tls=context, allow_reconnect=False, connect_timeout=3)
    try:
        sub = await nc.subscribe("secure")
        await nc.publish("secure", b"over tls")
        return (await sub.next_msg(timeout=2)).data
    finally:
        await nc.close()


def test_info_says_tls_required_and_nats_py_talks_through_tls(mq9, ca):
    broker = mq9(*_tls_args(ca))
    info = WireClient(broker.port).info
    assert info["tls_required"] is True
    url = f"tls://127.0.0.1:{broker.port}"
    assert asyncio.run(_round_trip(url, _client_context(ca, with_cert=False))) == b"over tls"
    assert broker.http_json("/varz")["tls_required"] is True


def test_plain_client_is_not_served(mq9, ca):
    broker = mq9(*_tls_args(ca))
    plain = WireClient(broker.port)
    plain.send(b'CONNECT {"verbose":false}\r\nPING\r\n')
    assert b"PONG" not in plain.read_all_until_close(wait=3)
    assert plain.closed


def test_client_from_an_unknown_ca_does_not_connect(mq9, ca, tmp_path):
    broker = mq9(*_tls_args(ca))
    (tmp_path / "other").mkdir()
    stranger = make_ca(tmp_path / "other")
    with pytest.raises((ssl.SSLError, OSError, nats.errors.Error)):
        asyncio.run(_round_trip(f"tls://127.0.0.1:{broker.port}", _client_context(stranger, with_cert=False)))


def test_tlsverify_requires_a_client_certificate(mq9, ca):
    broker = mq9(*_tls_args(ca, verify=True))
    url = f"tls://127.0.0.1:{broker.port}"
    assert WireClient(broker.port).info["tls_verify"] is True
    assert asyncio.run(_round_trip(url, _client_context(ca, with_cert=True))) == b"over tls"
    with pytest.raises((ssl.SSLError, OSError, nats.errors.Error, asyncio.TimeoutError)):
        asyncio.run(_round_trip(url, _client_context(ca, with_cert=False)))


def test_tls_with_auth(mq9, ca):
    broker = mq9(*_tls_args(ca), "--user", "alice", "--pass", "s3cret")
    url = f"tls://alice:s3cret@127.0.0.1:{broker.port}"
    assert asyncio.run(_round_trip(url, _client_context(ca, with_cert=False))) == b"over tls"


def test_missing_certificate_file_stops_the_start(tmp_path):
    from tests.test_cli import run
    done = run("start", "-p", "0", "-m", "0", "--data-dir", str(tmp_path), "--tls",
               "--tlscert", str(tmp_path / "absent.pem"), "--tlskey", str(tmp_path / "absent-key.pem"))
    assert done.returncode == 2
    assert "cannot load TLS certificate files" in done.stderr


@pytest.mark.interop
@pytest.mark.parametrize("verify", [False, True], ids=["tls", "tlsverify"])
def test_nats_server_takes_the_same_flags_and_client_code(ca, tmp_path, verify):
    """The flags and the client side above are nats-server's: the same run against it passes."""
    broker = Broker("nats-server", tmp_path, _tls_args(ca, verify=verify)).start()
    try:
        info = WireClient(broker.port).info
        assert info["tls_required"] is True
        url = f"tls://127.0.0.1:{broker.port}"
        assert asyncio.run(_round_trip(url, _client_context(ca, with_cert=verify))) == b"over tls"
    finally:
        broker.stop()
