"""Header blocks: parse, build, round trip, and refusal of malformed blocks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mq9cluster.protocol import headers
from mq9cluster.protocol.headers import NO_RESPONDERS, Headers, build, parse


def test_parse_plain_block() -> None:
    block = parse(b"NATS/1.0\r\nNats-Msg-Id: 42\r\nX: a\r\nx:  b \t\r\nEmpty:\r\n\r\n")
    assert block == Headers(None, "", [("Nats-Msg-Id", "42"), ("X", "a"), ("x", "b"),
                                       ("Empty", "")])
    assert block.get("nats-msg-id") == "42"
    assert block.get("X") == "a"
    assert block.get("missing") is None


def test_parse_status_forms() -> None:
    assert parse(NO_RESPONDERS) == Headers(503, "", [])
    assert parse(b"NATS/1.0 408 Request Timeout\r\nA: b\r\n\r\n") == \
        Headers(408, "Request Timeout", [("A", "b")])
    assert parse(b"NATS/1.0\r\n\r\n") == Headers(None, "", [])


def test_parse_keeps_value_colons_and_utf8() -> None:
    assert parse("NATS/1.0\r\nUrl: http://x:1/é\r\n\r\n".encode()).fields == \
        [("Url", "http://x:1/é")]


@pytest.mark.parametrize("block", [
    b"",
    b"NATS/1.0\r\n",
    b"NATS/1.0\r\n\r",
    b"NATS/2.0\r\n\r\n",
    b"HTTP/1.1\r\n\r\n",
    b"NATS/1.0503\r\n\r\n",
    b"NATS/1.0 50\r\n\r\n",
    b"NATS/1.0 5033\r\n\r\n",
    b"NATS/1.0 abc\r\n\r\n",
    b"NATS/1.0\r\nno colon\r\n\r\n",
    b"NATS/1.0\r\n: empty name\r\n\r\n",
    b"NATS/1.0\r\nbad name: x\r\n\r\n",
    b"NATS/1.0\r\n folded: x\r\n\r\n",
    b"NATS/1.0\r\nA: b\r\n\r\nB: c\r\n\r\n",
    b"NATS/1.0\r\nA: b\nB: c\r\n\r\n",
    b"NATS/1.0\r\nA: b\rc\r\n\r\n",
    b"NATS/1.0\r\nA: \xff\r\n\r\n",
])
def test_malformed_blocks_raise(block: bytes) -> None:
    with pytest.raises(ValueError):
        parse(block)


def test_build() -> None:
    assert build([]) == b"NATS/1.0\r\n\r\n"
    assert build([], 503) == NO_RESPONDERS
    assert build([("A", "1"), ("a", "2")], 408, "Request Timeout") == \
        b"NATS/1.0 408 Request Timeout\r\nA: 1\r\na: 2\r\n\r\n"


@pytest.mark.parametrize(("fields", "status", "description"), [
    ([("bad name", "x")], None, ""),
    ([("A:", "x")], None, ""),
    ([("", "x")], None, ""),
    ([("A", "x\r\nB: injected")], None, ""),
    ([("A\n", "x")], None, ""),
    ([], None, "description without status"),
    ([], 99, ""),
    ([], 1000, ""),
    ([], 503, "two\r\nlines"),
])
def test_build_refuses_what_would_break_the_block(fields: list, status: int | None,
                                                  description: str) -> None:
    with pytest.raises(ValueError):
        build(fields, status, description)


names = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
                min_size=1, max_size=12)
values = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=20) \
    .map(lambda value: value.strip(" \t"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(names, values), max_size=6), st.none() | st.integers(100, 999),
       values)
def test_build_parse_round_trip(fields: list, status: int | None, description: str) -> None:
    description = description if status is not None else ""
    assert headers.parse(build(fields, status, description)) == \
        Headers(status, description, fields)
