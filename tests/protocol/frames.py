"""Representative NATS frames with the events they must parse to, and ways to feed them."""

from __future__ import annotations

from mq9cluster.protocol import (
    OK,
    PING,
    PONG,
    Connect,
    Err,
    Info,
    Msg,
    Parser,
    Pub,
    Sub,
    Unsub,
)

BINARY = bytes(range(256))
HDR = b"NATS/1.0\r\nA: b\r\n\r\n"
STATUS_HDR = b"NATS/1.0 503 No Responders\r\n\r\n"

# (frame, events) for a client-side parser (accept_msg=False).
CLIENT_FRAMES: list[tuple[bytes, list]] = [
    (b'CONNECT {"verbose":false,"pedantic":false,"name":"x"}\r\n',
     [Connect({"verbose": False, "pedantic": False, "name": "x"})]),
    (b"connect {}\r\n", [Connect({})]),
    (b"CONNECT{}\n", [Connect({})]),
    (b'CoNnEcT \t {"echo":true} \t \r\n', [Connect({"echo": True})]),
    (b"CONNECT null\r\n", [Connect({})]),
    (b'CONNECT {"Verbose":true,"name":null,"x":[1,{"y":2}]}\r\n',
     [Connect({"verbose": True, "x": [1, {"y": 2}]})]),
    (b'INFO {"server_id":"a","port":4222} \r\n', [Info({"server_id": "a", "port": 4222})]),
    (b"info\t{}\n", [Info({})]),
    (b"PUB foo 3\r\nabc\r\n", [Pub(b"foo", None, b"abc", None)]),
    (b"pub foo.bar 3\r\nabc\r\n", [Pub(b"foo.bar", None, b"abc", None)]),
    (b"pUb\tfoo \t 3 \t \r\nabc\r\n", [Pub(b"foo", None, b"abc", None)]),
    (b"PUB   foo   reply.x   5\r\nhello\r\n", [Pub(b"foo", b"reply.x", b"hello", None)]),
    (b"PUB foo 3\nabc\r\n", [Pub(b"foo", None, b"abc", None)]),
    (b"PUB foo 0\r\n\r\n", [Pub(b"foo", None, b"", None)]),
    (b"PUB foo 000000003\r\nabc\r\n", [Pub(b"foo", None, b"abc", None)]),
    (b"PUB foo 6\r\n\r\nab\r\n\r\n", [Pub(b"foo", None, b"\r\nab\r\n", None)]),
    (b"PUB bin 256\r\n" + BINARY + b"\r\n", [Pub(b"bin", None, BINARY, None)]),
    (b"PUB \xc3\xa9t\xc3\xa9.\x00 1\r\nx\r\n", [Pub(b"\xc3\xa9t\xc3\xa9.\x00", None, b"x", None)]),
    (b"PUB foo* 1\r\n*\r\n", [Pub(b"foo*", None, b"*", None)]),
    (b"HPUB foo %d %d\r\n" % (len(HDR), len(HDR) + 2) + HDR + b"hi\r\n",
     [Pub(b"foo", None, b"hi", HDR)]),
    (b"hpub foo bar %d %d\r\n" % (len(HDR), len(HDR)) + HDR + b"\r\n",
     [Pub(b"foo", b"bar", b"", HDR)]),
    (b"HPUB\tfoo\t\t%d %d \r\n" % (len(STATUS_HDR), len(STATUS_HDR) + 3) + STATUS_HDR
     + b"\r\n\n\r\n", [Pub(b"foo", None, b"\r\n\n", STATUS_HDR)]),
    (b"HPUB foo 0 0\r\n\r\n", [Pub(b"foo", None, b"", b"")]),
    (b"SUB foo 1\r\n", [Sub(b"foo", None, b"1")]),
    (b"sub  foo.*.>\t\tq  sid-1  \n", [Sub(b"foo.*.>", b"q", b"sid-1")]),
    (b"SuB foo. 1\r\n", [Sub(b"foo.", None, b"1")]),
    (b"UNSUB 1\r\n", [Unsub(b"1", None)]),
    (b"unsub  1 \t 5 \r\n", [Unsub(b"1", 5)]),
    (b"UNSUB 1 0\n", [Unsub(b"1", 0)]),
    (b"UNSUB 1 x\r\n", [Unsub(b"1", None)]),
    (b"UNSUB 1 1234567890\r\n", [Unsub(b"1", None)]),
    (b"PING\r\n", [PING]),
    (b"ping\n", [PING]),
    (b"PiNg anything at all\r\n", [PING]),
    (b"PONG\r\n", [PONG]),
    (b"pong\n", [PONG]),
    (b"+OK\r\n", [OK]),
    (b"+ok\n", [OK]),
    (b"-ERR 'Unknown Protocol Operation'\r\n", [Err("Unknown Protocol Operation")]),
    (b"-err  'Permissions Violation for Subscription to \"x\"' \r\n",
     [Err('Permissions Violation for Subscription to "x"')]),
    (b"-ERR\tno quotes\n", [Err("no quotes")]),
]

# Frames only a parser with accept_msg=True takes.
MSG_FRAMES: list[tuple[bytes, list]] = [
    (b"MSG foo 1 3\r\nabc\r\n", [Msg(b"foo", b"1", None, b"abc", None)]),
    (b"msg\tfoo  9 _INBOX.x 0 \n\r\n", [Msg(b"foo", b"9", b"_INBOX.x", b"", None)]),
    (b"HMSG foo 1 %d %d\r\n" % (len(HDR), len(HDR) + 2) + HDR + b"hi\r\n",
     [Msg(b"foo", b"1", None, b"hi", HDR)]),
    (b"HMSG _INBOX.a 2 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
     [Msg(b"_INBOX.a", b"2", None, b"", b"NATS/1.0 503\r\n\r\n")]),
    (b"hmsg foo 1 r %d %d\r\n" % (len(HDR), len(HDR) + 3) + HDR + b"\r\n\n\r\n",
     [Msg(b"foo", b"1", b"r", b"\r\n\n", HDR)]),
]

# Frames that may follow any frame; fed partially to check what must be left over.
NEXT_FRAMES: list[tuple[bytes, list]] = [
    (b"PUB next 2\r\nhi\r\n", [Pub(b"next", None, b"hi", None)]),
    (b"HPUB next r %d %d\r\n" % (len(HDR), len(HDR) + 1) + HDR + b"!\r\n",
     [Pub(b"next", b"r", b"!", HDR)]),
    (b"SUB next q 7\r\n", [Sub(b"next", b"q", b"7")]),
    (b"PING\r\n", [PING]),
]


def typed(events: list) -> list[tuple[str, tuple]]:
    """Events with their type names: PING, PONG and OK are all equal as bare tuples."""
    return [(type(event).__name__, tuple(event)) for event in events]


def feed_whole(data: bytes, **options) -> list:
    """Events from one feed."""
    return Parser(**options).feed(data)


def feed_bytewise(data: bytes, **options) -> list:
    """Events from feeding one byte at a time."""
    parser = Parser(**options)
    return [event for i in range(len(data)) for event in parser.feed(data[i:i + 1])]


def feed_chunks(chunks: list[bytes], **options) -> list:
    """Events from feeding each chunk in turn."""
    parser = Parser(**options)
    return [event for chunk in chunks for event in parser.feed(chunk)]
