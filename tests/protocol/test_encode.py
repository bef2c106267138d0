"""Encoders write the exact wire bytes, and what they write parses back to the same values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mq9cluster.protocol import (
    OK,
    PING,
    PONG,
    Connect,
    Err,
    Info,
    Msg,
    Pub,
    Sub,
    Unsub,
    encode,
)

from .frames import feed_whole, typed

_WHITESPACE = b" \t\r\n\x0b\x0c"
tokens = st.lists(st.integers(0, 255).filter(lambda b: b not in _WHITESPACE),
                  min_size=1, max_size=16).map(bytes)
optional_tokens = st.none() | tokens
payloads = st.binary(max_size=200)


def test_exact_server_frames() -> None:
    assert encode.info({"server_id": "x", "port": 4222, "headers": True}) == \
        b'INFO {"server_id":"x","port":4222,"headers":true} \r\n'
    assert encode.msg(b"foo.bar", b"1", None, b"hi") == b"MSG foo.bar 1 2\r\nhi\r\n"
    assert encode.msg(b"foo", b"22", b"_INBOX.a", b"") == b"MSG foo 22 _INBOX.a 0\r\n\r\n"
    assert encode.hmsg(b"_INBOX.a", b"3", None, b"NATS/1.0 503\r\n\r\n", b"") == \
        b"HMSG _INBOX.a 3 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
    assert encode.hmsg(b"f", b"1", b"r", b"NATS/1.0\r\n\r\n", b"xy") == \
        b"HMSG f 1 r 12 14\r\nNATS/1.0\r\n\r\nxy\r\n"
    assert encode.err("Invalid Subject") == b"-ERR 'Invalid Subject'\r\n"
    assert (encode.PING_FRAME, encode.PONG_FRAME, encode.OK_FRAME) == \
        (b"PING\r\n", b"PONG\r\n", b"+OK\r\n")


def test_exact_client_frames() -> None:
    assert encode.connect({"verbose": False}) == b'CONNECT {"verbose":false}\r\n'
    assert encode.pub(b"foo", None, b"abc") == b"PUB foo 3\r\nabc\r\n"
    assert encode.pub(b"foo", b"r", b"") == b"PUB foo r 0\r\n\r\n"
    assert encode.hpub(b"foo", None, b"NATS/1.0\r\n\r\n", b"a") == \
        b"HPUB foo 12 13\r\nNATS/1.0\r\n\r\na\r\n"
    assert encode.hpub(b"foo", b"r", b"NATS/1.0\r\n\r\n", b"") == \
        b"HPUB foo r 12 12\r\nNATS/1.0\r\n\r\n\r\n"
    assert encode.sub(b"foo.*", None, b"1") == b"SUB foo.* 1\r\n"
    assert encode.sub(b"foo", b"q", b"2") == b"SUB foo q 2\r\n"
    assert encode.unsub(b"1") == b"UNSUB 1\r\n"
    assert encode.unsub(b"1", 10) == b"UNSUB 1 10\r\n"


def test_control_frames_round_trip() -> None:
    frames = encode.PING_FRAME + encode.PONG_FRAME + encode.OK_FRAME + encode.err("a 'b' c") + \
        encode.info({"a": [1, "é"]}) + encode.connect({"echo": False, "name": "é"})
    assert typed(feed_whole(frames)) == typed(
        [PING, PONG, OK, Err("a 'b' c"), Info({"a": [1, "é"]}),
         Connect({"echo": False, "name": "é"})])


@settings(max_examples=200, deadline=None)
@given(tokens, tokens, optional_tokens, payloads, st.none() | payloads)
def test_msg_round_trip(subject: bytes, sid: bytes, reply: bytes | None, payload: bytes,
                        headers: bytes | None) -> None:
    frame = encode.msg(subject, sid, reply, payload) if headers is None else \
        encode.hmsg(subject, sid, reply, headers, payload)
    assert typed(feed_whole(frame, accept_msg=True)) == \
        typed([Msg(subject, sid, reply, payload, headers)])


@settings(max_examples=200, deadline=None)
@given(tokens, optional_tokens, payloads, st.none() | payloads)
def test_pub_round_trip(subject: bytes, reply: bytes | None, payload: bytes,
                        headers: bytes | None) -> None:
    frame = encode.pub(subject, reply, payload) if headers is None else \
        encode.hpub(subject, reply, headers, payload)
    assert typed(feed_whole(frame)) == typed([Pub(subject, reply, payload, headers)])


@settings(max_examples=100, deadline=None)
@given(tokens, optional_tokens, tokens, st.none() | st.integers(0, 999_999_999))
def test_sub_unsub_round_trip(subject: bytes, queue: bytes | None, sid: bytes,
                              max_msgs: int | None) -> None:
    frames = encode.sub(subject, queue, sid) + encode.unsub(sid, max_msgs)
    assert typed(feed_whole(frames)) == typed([Sub(subject, queue, sid), Unsub(sid, max_msgs)])
