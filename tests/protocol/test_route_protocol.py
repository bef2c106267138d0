"""The route protocol between nodes: frames parse the same however cut, encoders round-trip,
client operations and malformed lines are refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mq9cluster.protocol import (
    OK,
    PING,
    PONG,
    Err,
    Info,
    Parser,
    RouteMsg,
    RouteSub,
    RouteUnsub,
    encode,
    parser,
)

from .frames import HDR, feed_bytewise, feed_chunks, feed_whole, typed

ROUTE_FRAMES: list[tuple[bytes, list]] = [
    (b'INFO {"server_id":"N1","route_proto":1} \r\n', [Info({"server_id": "N1", "route_proto": 1})]),
    (b"RS+ foo.*\r\n", [RouteSub(b"foo.*", None)]),
    (b"rs+  foo.>\t workers \n", [RouteSub(b"foo.>", b"workers")]),
    (b"RS- foo.*\r\n", [RouteUnsub(b"foo.*", None)]),
    (b"RS- foo q\r\n", [RouteUnsub(b"foo", b"q")]),
    (b"RMSG foo 3\r\nabc\r\n", [RouteMsg(b"foo", None, (), b"abc", None)]),
    (b"RMSG foo _INBOX.a.b 0\r\n\r\n", [RouteMsg(b"foo", b"_INBOX.a.b", (), b"", None)]),
    (b"RMSG foo + r q1 q2 2\r\nhi\r\n", [RouteMsg(b"foo", b"r", (b"q1", b"q2"), b"hi", None)]),
    (b"rmsg foo | q 4\r\n\r\n\r\n\r\n", [RouteMsg(b"foo", None, (b"q",), b"\r\n\r\n", None)]),
    (b"RHMSG foo %d %d\r\n" % (len(HDR), len(HDR) + 1) + HDR + b"!\r\n",
     [RouteMsg(b"foo", None, (), b"!", HDR)]),
    (b"RHMSG foo + r q %d %d\r\n" % (len(HDR), len(HDR)) + HDR + b"\r\n",
     [RouteMsg(b"foo", b"r", (b"q",), b"", HDR)]),
    (b"PING\r\n", [PING]),
    (b"PONG\r\n", [PONG]),
    (b"+OK\r\n", [OK]),
    (b"-ERR 'Route Handshake Expected'\r\n", [Err("Route Handshake Expected")]),
]
IDS = [repr(frame[:24]) for frame, _ in ROUTE_FRAMES]
NEXT = encode.rmsg(b"next", None, [b"q"], b"xy")
NEXT_EVENT = RouteMsg(b"next", None, (b"q",), b"xy", None)


@pytest.mark.parametrize(("frame", "events"), ROUTE_FRAMES, ids=IDS)
def test_whole_bytewise_and_split(frame: bytes, events: list) -> None:
    assert typed(feed_whole(frame, route=True)) == typed(events)
    assert typed(feed_bytewise(frame, route=True)) == typed(events)
    for cut in range(1, len(frame)):
        assert typed(feed_chunks([frame[:cut], frame[cut:]], route=True)) == typed(events), cut


@pytest.mark.parametrize(("frame", "events"), ROUTE_FRAMES, ids=IDS)
def test_partial_next_frame_is_left_over(frame: bytes, events: list) -> None:
    for cut in range(1, len(NEXT)):
        route = Parser(route=True)
        assert typed(route.feed(frame + NEXT[:cut])) == typed(events)
        assert typed(route.feed(NEXT[cut:])) == typed([NEXT_EVENT])
        assert route.buffered == 0


@pytest.mark.parametrize("data", [
    b"PUB foo 1\r\nx\r\n", b"SUB foo 1\r\n", b"CONNECT {}\r\n", b"MSG foo 1 1\r\nx\r\n",
    b"GET / HTTP/1.1\r\n", b"\x16\x03\x01\x02\x00",
])
def test_client_operations_and_garbage_are_unknown(data: bytes) -> None:
    [violation] = feed_whole(data, route=True)
    assert (violation.text, violation.send_err) == (parser.UNKNOWN_OPERATION, True)
    assert feed_bytewise(data, route=True)[-1].text == parser.UNKNOWN_OPERATION


@pytest.mark.parametrize("data", [
    b"RS+\tfoo q extra\r\n", b"RS- a b c\r\n", b"RMSG foo\r\n", b"RMSG foo a b 1\r\nx\r\n",
    b"RMSG foo 1 2 3 4\r\n", b"RHMSG foo 5\r\nx\r\n", b"RMSG foo x\r\n",
])
def test_malformed_route_lines_are_violations(data: bytes) -> None:
    events = feed_whole(data, route=True)
    assert [type(event).__name__ for event in events] == ["Violation"]


def test_client_parser_refuses_route_operations() -> None:
    for frame, _ in ROUTE_FRAMES[1:11]:
        [violation] = feed_whole(frame)
        assert violation.text == parser.UNKNOWN_OPERATION


def test_exact_route_frames() -> None:
    assert encode.route_interest(True, b"a.*", None) == b"RS+ a.*\r\n"
    assert encode.route_interest(False, b"a", b"q") == b"RS- a q\r\n"
    assert encode.rmsg(b"a", None, (), b"x") == b"RMSG a 1\r\nx\r\n"
    assert encode.rmsg(b"a", b"r", [b"q1", b"q2"], b"") == b"RMSG a + r q1 q2 0\r\n\r\n"
    assert encode.rmsg(b"a", None, [b"q"], b"") == b"RMSG a | q 0\r\n\r\n"
    assert encode.rhmsg(b"a", b"r", (), b"NATS/1.0\r\n\r\n", b"p") == \
        b"RHMSG a r 12 13\r\nNATS/1.0\r\n\r\np\r\n"


_WHITESPACE = b" \t\r\n\x0b\x0c"
tokens = st.lists(st.integers(0, 255).filter(lambda b: b not in _WHITESPACE),
                  min_size=1, max_size=12).map(bytes)


@settings(max_examples=200, deadline=None)
@given(tokens, st.none() | tokens, st.lists(tokens, max_size=3), st.binary(max_size=100),
       st.none() | st.binary(max_size=40))
def test_rmsg_round_trip(subject: bytes, reply: bytes | None, queues: list[bytes], payload: bytes,
                         headers: bytes | None) -> None:
    frame = encode.rmsg(subject, reply, queues, payload) if headers is None else \
        encode.rhmsg(subject, reply, queues, headers, payload)
    assert typed(feed_whole(frame, route=True)) == \
        typed([RouteMsg(subject, reply, tuple(queues), payload, headers)])


@settings(max_examples=100, deadline=None)
@given(tokens, st.none() | tokens, st.booleans())
def test_interest_round_trip(subject: bytes, queue: bytes | None, added: bool) -> None:
    kind = RouteSub if added else RouteUnsub
    assert typed(feed_whole(encode.route_interest(added, subject, queue), route=True)) == \
        typed([kind(subject, queue)])
