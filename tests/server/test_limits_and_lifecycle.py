"""mq9cluster's own process-level behaviour: limits, keepalive, slow consumers, signals, monitoring."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error

import pytest

from tests.interop.wire import WireClient


def test_slow_consumer_is_cut_and_others_are_not_delayed(mq9):
    broker = mq9("--max-pending", "262144", "--write-deadline", "1")
    stuck = WireClient(broker.port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.handshake()
    stuck.send(b"SUB flood 1\r\nPING\r\n")
    assert stuck.read_line() == b"PONG\r\n"
    reader = WireClient(broker.port)
    reader.handshake()
    reader.send(b"SUB flood 1\r\nPING\r\n")
    assert reader.read_line() == b"PONG\r\n"
    publisher = WireClient(broker.port)
    publisher.handshake()
    payload = b"x" * 1024
    frame = b"PUB flood 1024\r\n" + payload + b"\r\n"
    msg_len = len(b"MSG flood 1 1024\r\n") + 1024 + 2
    got = 0  # bytes: a frame split across two reads is still counted once
    for _ in range(120):  # 12 MB: more than the kernel's socket buffers (up to 4 MB each) plus max_pending
        publisher.send(frame * 100)
        got += len(reader.drain_quiet(0.01))
    assert publisher.ping_pong()
    deadline = time.monotonic() + 5
    while got < 12000 * msg_len and time.monotonic() < deadline:
        got += len(reader.drain_quiet(0.1))
    assert got == 12000 * msg_len
    # The cut is asynchronous: over max_pending at once, or after write_deadline when the
    # kernel's socket buffers absorbed the backlog first.
    deadline = time.monotonic() + 5
    while broker.http_json("/varz")["slow_consumers"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    varz = broker.http_json("/varz")
    assert varz["slow_consumers"] == 1
    assert varz["connections"] == 2
    stuck.close()


def test_stale_connection_is_closed_after_ping_max(mq9):
    broker = mq9("--ping-interval", "0.2", "--first-ping-delay", "0.1", "--ping-max", "2")
    silent = WireClient(broker.port, timeout=3)
    silent.handshake()
    answering = WireClient(broker.port, timeout=3)
    answering.handshake()
    pings_answered = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        pings = answering.drain_quiet(0.05).count(b"PING\r\n")
        answering.send(b"PONG\r\n" * pings)
        pings_answered += pings
    assert silent.read_all_until_close(1) == b"PING\r\nPING\r\n-ERR 'Stale Connection'\r\n"
    assert silent.closed
    assert pings_answered >= 3
    assert answering.ping_pong()


def test_max_connections(mq9):
    broker = mq9("--max-connections", "2")
    first, second = WireClient(broker.port), WireClient(broker.port)
    third = WireClient(broker.port)
    assert third.read_all_until_close() == b"-ERR 'maximum connections exceeded'\r\n"
    assert first.ping_pong() and second.ping_pong()
    first.close()
    time.sleep(0.2)
    fourth = WireClient(broker.port)
    assert fourth.ping_pong()


def test_max_subscriptions_keeps_connection(mq9):
    broker = mq9("--max-subscriptions", "2")
    c = WireClient(broker.port)
    c.handshake()
    c.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\n")
    assert c.read_line() == b"-ERR 'maximum subscriptions exceeded'\r\n"
    c.send(b"PUB b 1\r\nx\r\nPUB c 1\r\ny\r\nPING\r\n")
    assert c.read_exactly(b"MSG b 2 1\r\nx\r\nPONG\r\n") == b"MSG b 2 1\r\nx\r\nPONG\r\n"


def test_max_payload_setting_is_announced_and_enforced(mq9):
    broker = mq9("--max-payload", "100")
    c = WireClient(broker.port)
    assert c.info["max_payload"] == 100
    c.handshake()
    c.send(b"PUB a 101\r\n")
    assert c.read_all_until_close() == b"-ERR 'Maximum Payload Violation'\r\n"


def test_sigterm_flushes_and_exits_cleanly(mq9):
    broker = mq9()
    c = WireClient(broker.port)
    c.handshake()
    broker.signal(signal.SIGTERM)
    assert broker.wait_exit(5) == 0
    c.read_all_until_close(2)
    assert c.closed
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", broker.port), timeout=1)


def test_lame_duck_mode(mq9):
    broker = mq9("--lame-duck-duration", "1", "--lame-duck-grace", "0.3")
    modern = WireClient(broker.port)
    modern.handshake(protocol=1)
    legacy = WireClient(broker.port)
    legacy.handshake(protocol=0)
    broker.signal(signal.SIGUSR2)
    line = modern.read_line()
    assert line.startswith(b"INFO {")
    info = json.loads(line[5:-3])
    assert info["ldm"] is True
    assert info.get("connect_urls", []) == []
    time.sleep(0.1)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", broker.port), timeout=1)
    assert legacy.read_all_until_close(3) == b""  # protocol 0 clients get no async INFO
    assert modern.read_all_until_close(3) == b""
    assert broker.wait_exit(5) == 0


def test_monitoring_endpoints_move_with_traffic(mq9):
    broker = mq9()
    assert broker.http_json("/healthz") == {"status": "ok"}
    before = broker.http_json("/varz")
    c = WireClient(broker.port)
    c.handshake(name="watcher", lang="raw")
    c.send(b"SUB a.* 1\r\nSUB b 2\r\nPUB a.x 5\r\nhello\r\nPING\r\n")
    assert c.read_exactly(b"MSG a.x 1 5\r\nhello\r\nPONG\r\n") == b"MSG a.x 1 5\r\nhello\r\nPONG\r\n"
    varz = broker.http_json("/varz")
    assert varz["in_msgs"] == before["in_msgs"] + 1
    assert varz["in_bytes"] == before["in_bytes"] + 5
    assert varz["out_msgs"] == before["out_msgs"] + 1
    assert varz["connections"] == 1
    assert varz["subscriptions"] == 2
    assert varz["port"] == broker.port
    connz = broker.http_json("/connz?subs=1")
    [conn] = connz["connections"]
    assert conn["name"] == "watcher" and conn["lang"] == "raw"
    assert conn["subscriptions"] == 2
    assert sorted(conn["subscriptions_list"]) == ["a.*", "b"]
    assert (conn["in_msgs"], conn["in_bytes"], conn["out_msgs"], conn["out_bytes"]) == (1, 5, 1, 5)
    assert conn["pending_bytes"] == 0
    with pytest.raises(urllib.error.HTTPError) as missing:
        broker.http_json("/nope")
    assert missing.value.code == 404


def test_listening_quickly_after_start(mq9, tmp_path):
    started = time.monotonic()
    mq9()
    assert time.monotonic() - started < 3.0  # generous: the target is well under a second
