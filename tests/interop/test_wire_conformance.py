"""Byte-exact protocol behaviour, checked on both servers: what real clients depend on, and bad input.

Every test runs against Debian's nats-server and against mq9cluster with the same expectations,
so the expectations are nats-server's behaviour, not our reading of the docs.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.interop.wire import WireClient

pytestmark = pytest.mark.interop

UNKNOWN = b"-ERR 'Unknown Protocol Operation'\r\n"


@pytest.fixture
def wire(server):
    clients: list[WireClient] = []

    def connect(**options) -> WireClient:
        client = WireClient(server.port)
        clients.append(client)
        if options.get("handshake", True):
            options.pop("handshake", None)
            client.handshake(**options)
        return client

    yield connect
    for client in clients:
        client.close()


def test_info_fields(wire):
    info = wire(handshake=False).info
    assert info["proto"] == 1
    assert info["headers"] is True
    assert info["max_payload"] == 1048576
    assert str(info["version"]).startswith("2.")
    assert info["client_id"] > 0
    for key in ("server_id", "server_name", "host", "port"):
        assert key in info


def test_absent_connect_fields_mean_verbose(wire):
    c = wire(handshake=False)
    c.send(b"CONNECT {}\r\nPING\r\n")
    assert c.read_exactly(b"+OK\r\nPONG\r\n") == b"+OK\r\nPONG\r\n"
    c.send(b"SUB foo 1\r\nPUB foo 2\r\nhi\r\nUNSUB 1\r\nPING\r\n")
    expected = b"+OK\r\n+OK\r\nMSG foo 1 2\r\nhi\r\n+OK\r\nPONG\r\n"  # +OK for a PUB precedes its MSG
    assert c.read_exactly(expected) == expected


def test_ping_before_connect_gets_pong(wire):
    c = wire(handshake=False)
    assert c.ping_pong()


def test_case_insensitive_ops_tabs_spaces_and_bare_lf(wire):
    c = wire()
    c.send(b"sub\tfoo.*  \t 7  \nPuB   foo.bar\t  3\r\nabc\r\nping\n")
    assert c.read_exactly(b"MSG foo.bar 7 3\r\nabc\r\nPONG\r\n") == b"MSG foo.bar 7 3\r\nabc\r\nPONG\r\n"


def test_pipelined_frames_sent_one_byte_at_a_time(wire):
    c = wire()
    frames = b"SUB a.> 1\r\nSUB a.b 2 \r\nPUB a.b r.x 5\r\nhello\r\nUNSUB 2\r\nPUB a.b 0\r\n\r\nPING\r\n"
    for i in range(len(frames)):
        c.send(frames[i:i + 1])
    got = c.read_exactly(b"x" * 200)  # everything that comes within the deadline
    msgs = got.split(b"PONG\r\n")[0]
    assert msgs.count(b"MSG a.b 1 r.x 5\r\nhello\r\n") == 1
    assert msgs.count(b"MSG a.b 2 r.x 5\r\nhello\r\n") == 1
    assert msgs.count(b"MSG a.b 1 0\r\n\r\n") == 1
    assert msgs.count(b"MSG a.b 2 0") == 0
    assert got.endswith(b"PONG\r\n")


def test_bad_connect_json_closes_without_err(wire):
    c = wire(handshake=False)
    c.send(b"CONNECT {not json}\r\nPING\r\n")
    assert c.read_all_until_close() == b""
    assert c.closed


def test_invalid_protocol_version(wire):
    c = wire(handshake=False)
    c.send(b'CONNECT {"protocol":2}\r\n')
    assert c.read_all_until_close() == b"-ERR 'invalid client protocol'\r\n"
    assert c.closed


def test_no_responders_requires_headers(wire):
    c = wire(handshake=False)
    c.send(b'CONNECT {"no_responders":true,"verbose":false}\r\n')
    assert c.read_all_until_close() == b"-ERR 'no responders requires headers support'\r\n"
    assert c.closed


@pytest.mark.parametrize("line", [b"FOO bar\r\n", b"MSG foo 1 2\r\nhi\r\n", b"PUBX foo 1\r\n", b"\x00\x01\x02\r\n"])
def test_unknown_operation_closes_with_err(wire, line):
    c = wire()
    c.send(line)
    assert c.read_all_until_close() == UNKNOWN
    assert c.closed


@pytest.mark.parametrize("frame", [b"PUB foo 3\r\nabcd\r\n", b"PUB foo 3\r\nab\r\n\r\n", b"PUB foo 3\r\nabcXY"])
def test_payload_not_matching_its_size(wire, frame):
    c = wire()
    c.send(frame)
    assert c.read_all_until_close() == UNKNOWN
    assert c.closed


def test_ten_megabyte_payload_claim_is_refused_before_the_payload(wire):
    c = wire()
    other = wire()
    c.send(b"PUB foo 10485760\r\n")
    assert c.read_all_until_close() == b"-ERR 'Maximum Payload Violation'\r\n"
    assert c.closed
    assert other.ping_pong()


def test_hpub_over_max_payload_counts_total(wire):
    c = wire(headers=True)
    c.send(b"HPUB foo 12 1048577\r\n")
    assert c.read_all_until_close() == b"-ERR 'Maximum Payload Violation'\r\n"


def test_control_line_over_limit(wire):
    c = wire()
    other = wire()
    c.send(b"SUB " + b"a" * 5000 + b" 1\r\n")
    got = c.read_all_until_close()
    assert got == b"-ERR 'maximum control line exceeded'\r\n"
    assert other.ping_pong()


@pytest.mark.parametrize("frame", [b"PUB\r\n", b"PUB foo\r\n", b"PUB foo bar baz 1\r\n", b"PUB foo x\r\n", b"HPUB foo 5\r\n"])
def test_wrong_publish_arguments_close(wire, frame):
    c = wire(headers=True)
    c.send(frame)
    c.read_all_until_close()
    assert c.closed


@pytest.mark.parametrize("subject", [b"foo..bar", b"foo.", b".foo", b"foo.>.bar", b">.foo"])
def test_invalid_subscription_subject_keeps_connection(wire, subject):
    c = wire()
    c.send(b"SUB " + subject + b" 1\r\n")
    assert c.read_line() == b"-ERR 'Invalid Subject'\r\n"
    assert c.ping_pong()


def test_wildcards_only_as_whole_tokens(wire):
    c = wire()
    c.send(b"SUB foo* 1\r\nPUB foo* 1\r\nx\r\nPUB fooa 1\r\ny\r\nPING\r\n")
    assert c.read_exactly(b"MSG foo* 1 1\r\nx\r\nPONG\r\n") == b"MSG foo* 1 1\r\nx\r\nPONG\r\n"


def test_pedantic_wildcard_publish_gets_err_and_is_still_published(wire):
    # nats-server 2.9.10 sends the -ERR but still delivers the message literally.
    c = wire(pedantic=True)
    c.send(b"SUB > 1\r\nPUB foo.* 1\r\nx\r\nPING\r\n")
    expected = b"-ERR 'Invalid Publish Subject'\r\nMSG foo.* 1 1\r\nx\r\nPONG\r\n"
    assert c.read_exactly(expected) == expected


@pytest.mark.parametrize("pedantic", [True, False])
def test_publish_to_subject_with_empty_token_reaches_nobody(wire, pedantic):
    c = wire(pedantic=pedantic)
    c.send(b"SUB > 1\r\nPUB foo..bar 1\r\nx\r\nPUB .foo 1\r\nx\r\nPING\r\n")
    err = b"-ERR 'Invalid Publish Subject'\r\n" if pedantic else b""
    expected = err * 2 + b"PONG\r\n"
    assert c.read_exactly(expected + b"extra") == expected


def test_duplicate_sid_keeps_first_subscription(wire):
    c = wire()
    c.send(b"SUB foo 1\r\nSUB bar 1\r\nPUB bar 1\r\nb\r\nPUB foo 1\r\nf\r\nPING\r\n")
    assert c.read_exactly(b"MSG foo 1 1\r\nf\r\nPONG\r\n") == b"MSG foo 1 1\r\nf\r\nPONG\r\n"


def test_unsub_with_max_and_unknown_sid(wire):
    c = wire()
    c.send(b"UNSUB 99\r\nSUB foo 1\r\nUNSUB 1 2\r\n" + b"PUB foo 1\r\nx\r\n" * 4 + b"PING\r\n")
    expected = b"MSG foo 1 1\r\nx\r\n" * 2 + b"PONG\r\n"
    assert c.read_exactly(expected) == expected


def test_unsub_max_already_reached_removes_at_once(wire):
    c = wire()
    c.send(b"SUB foo 1\r\nPUB foo 1\r\nx\r\nPUB foo 1\r\nx\r\nPING\r\n")
    first = b"MSG foo 1 1\r\nx\r\n" * 2 + b"PONG\r\n"
    assert c.read_exactly(first) == first
    c.send(b"UNSUB 1 1\r\nPUB foo 1\r\nx\r\nPING\r\n")
    assert c.read_exactly(b"PONG\r\n") == b"PONG\r\n"


def test_echo_false(wire):
    c = wire(echo=False)
    other = wire()
    other.send(b"SUB foo 1\r\nPING\r\n")
    assert other.read_line() == b"PONG\r\n"
    c.send(b"SUB foo 1\r\nPUB foo 1\r\nx\r\nPING\r\n")
    assert c.read_exactly(b"PONG\r\n") == b"PONG\r\n"
    assert other.read_exactly(b"MSG foo 1 1\r\nx\r\n") == b"MSG foo 1 1\r\nx\r\n"


def test_hpub_without_header_support_closes(wire):
    c = wire(headers=False)
    c.send(b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
    c.read_all_until_close()
    assert c.closed


def test_headers_delivered_as_hmsg_and_stripped_for_plain_clients(wire):
    hdr = b"NATS/1.0\r\nA: b\r\n\r\n"
    with_headers = wire(headers=True)
    plain = wire(headers=False)
    for c in (with_headers, plain):
        c.send(b"SUB foo 9\r\nPING\r\n")
        assert c.read_line() == b"PONG\r\n"
    with_headers.send(b"HPUB foo %d %d\r\n%spay\r\n" % (len(hdr), len(hdr) + 3, hdr))
    expected = b"HMSG foo 9 %d %d\r\n%spay\r\n" % (len(hdr), len(hdr) + 3, hdr)
    assert with_headers.read_exactly(expected) == expected
    assert plain.read_exactly(b"MSG foo 9 3\r\npay\r\n") == b"MSG foo 9 3\r\npay\r\n"


def test_no_responders_status_exact_bytes(wire):
    c = wire(headers=True, no_responders=True)
    c.send(b"SUB _INBOX.x.* 5\r\nPUB nobody _INBOX.x.1 2\r\nhi\r\n")
    expected = b"HMSG _INBOX.x.1 5 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
    assert c.read_exactly(expected) == expected


def test_no_responders_needs_the_requesters_own_subscription(wire):
    c = wire(headers=True, no_responders=True)
    c.send(b"PUB nobody _INBOX.y.1 2\r\nhi\r\nPING\r\n")
    assert c.read_exactly(b"PONG\r\n") == b"PONG\r\n"


def test_queue_group_gets_each_message_once(wire):
    members = [wire() for _ in range(3)]
    for m in members:
        m.send(b"SUB work q 1\r\nPING\r\n")
        assert m.read_line() == b"PONG\r\n"
    pub = wire()
    pub.send(b"PUB work 1\r\nx\r\n" * 300 + b"PING\r\n")
    assert pub.read_line() == b"PONG\r\n"
    counts = [m.drain_quiet(0.5).count(b"MSG work 1 1\r\nx\r\n") for m in members]
    assert sum(counts) == 300
    assert sum(1 for n in counts if n) >= 2


def test_client_err_line_closes(wire):
    c = wire()
    c.send(b"-ERR 'oops'\r\n")
    c.read_all_until_close()
    assert c.closed


def test_thousand_connections_opened_and_dropped(wire, server):
    survivor = wire()
    for _ in range(1000):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.close()
    assert survivor.ping_pong()
    fresh = wire()
    fresh.send(b"SUB a 1\r\nPUB a 1\r\nz\r\nPING\r\n")
    assert fresh.read_exactly(b"MSG a 1 1\r\nz\r\nPONG\r\n") == b"MSG a 1 1\r\nz\r\nPONG\r\n"


def test_megabyte_garbage_line_costs_one_error(wire):
    c = wire()
    other = wire()
    try:
        c.send(b"X" * 1048576 + b"\r\n")
    except OSError:
        pass  # the server may close before it has read it all
    got = c.read_all_until_close()
    assert got in (b"-ERR 'maximum control line exceeded'\r\n", UNKNOWN)
    assert other.ping_pong()
