"""Malformed input: the exact Violation, the stuck error state, and the input limits."""

from __future__ import annotations

import random

import pytest

from mq9cluster.protocol import PING, Parser, Sub, Violation

from .errors import CONTROL_LINE, ERROR_CASES, PAYLOAD, UNKNOWN
from .frames import feed_bytewise, feed_chunks, feed_whole, typed

IDS = [repr(data[:30]) for data, _ in ERROR_CASES]


def outcome(events: list) -> tuple[str, bool]:
    """(text, send_err) of the single Violation that must end ``events``."""
    assert isinstance(events[-1], Violation), events
    assert not any(isinstance(event, Violation) for event in events[:-1])
    return events[-1].text, events[-1].send_err


@pytest.mark.parametrize(("data", "expected"), ERROR_CASES, ids=IDS)
def test_violation_whole_and_bytewise(data: bytes, expected: tuple[str, bool]) -> None:
    [violation] = feed_whole(data)
    assert (violation.text, violation.send_err) == expected
    assert outcome(feed_bytewise(data)) == expected


@pytest.mark.parametrize(("data", "expected"), ERROR_CASES, ids=IDS)
def test_violation_after_good_events_then_stuck(data: bytes, expected: tuple[str, bool]) -> None:
    parser = Parser()
    events = parser.feed(b"PING\r\nSUB a 1\r\n" + data + b"\r\nPING\r\n")
    assert typed(events[:2]) == typed([PING, Sub(b"a", None, b"1")])
    assert outcome(events[2:]) == expected
    assert parser.buffered == 0
    assert parser.feed(b"PING\r\n") == []
    assert parser.feed(data) == []


def test_detail_quotes_state_and_snippet() -> None:
    [violation] = feed_whole(b"PUB foo 3\r\nabcdefgh")
    assert violation.detail == "state=MSG_END proto=b'defgh'"
    [violation] = feed_whole(b"SUB a b c d\r\n")
    assert violation.detail == "state=SUB_ARG proto=b'SUB a b c d\\r\\n'"
    [violation] = feed_whole(b"X" * 100)
    assert violation.detail == "state=OP_START proto=b'" + "X" * 32 + "'"


def test_control_line_limit_on_partial_input() -> None:
    parser = Parser()
    assert outcome(parser.feed(b"SUB " + b"a" * 4996)) == CONTROL_LINE


def test_control_line_limit_boundary_on_partial_input() -> None:
    parser = Parser()
    assert parser.feed(b"PUB   " + b"a" * 4096) == []
    assert parser.feed(b"\r") == []  # a final CR does not count
    assert parser.buffered <= 4096 + 6
    assert outcome(parser.feed(b"a")) == CONTROL_LINE


def test_control_line_limit_is_configurable() -> None:
    assert typed(Parser(max_control_line=8).feed(b"SUB a.bcd 12\r\n")) == \
        typed([Sub(b"a.bcd", None, b"12")])
    assert outcome(Parser(max_control_line=8).feed(b"SUB a.bcde 12\r\n")) == CONTROL_LINE
    assert outcome(Parser(max_control_line=8).feed(b"SUB a.bcde 12")) == CONTROL_LINE


def test_max_payload_before_the_payload_arrives() -> None:
    parser = Parser()
    assert outcome(parser.feed(b"PING\r\nPUB foo 10485760\r\n")) == PAYLOAD
    assert parser.buffered == 0
    assert outcome(Parser(max_payload=10).feed(b"HPUB foo 1 11\r\n")) == PAYLOAD


def test_payload_end_checked_as_soon_as_it_arrives() -> None:
    parser = Parser()
    assert parser.feed(b"PUB foo 5\r\nabc") == []
    assert parser.feed(b"de") == []
    assert outcome(parser.feed(b"!")) == UNKNOWN


def test_partial_unknown_op_fails_at_first_bad_byte() -> None:
    parser = Parser()
    assert parser.feed(b"UNS") == []
    assert outcome(parser.feed(b"X")) == UNKNOWN


def adversarial_stream(rng: random.Random, max_payload: int, max_line: int) -> bytes:
    """Valid frames near both limits, ending with an oversized line that must fail."""
    parts = []
    for _ in range(40):
        size = rng.choice([0, 1, max_payload - 1, max_payload])
        parts.append(b"PUB %b %d\r\n%b\r\n" % (b"s" * rng.randint(1, max_line - 8), size,
                                                b"p" * size))
        parts.append(b"PING" + b" " * rng.randint(0, 3 * max_line) + b"\r\n")
        parts.append(b"SUB" + b"\t" * rng.randint(1, 3 * max_line) + b"x 1\r\n")
    return b"".join(parts) + b"SUB " + b"y" * (max_line + 1)


@pytest.mark.parametrize("seed", range(20))
def test_buffer_stays_within_limits(seed: int) -> None:
    rng = random.Random(seed)
    max_payload, max_line = 300, 40
    stream = adversarial_stream(rng, max_payload, max_line)
    parser = Parser(max_payload=max_payload, max_control_line=max_line)
    events, pos = [], 0
    while pos < len(stream):
        step = rng.choice([1, 2, 7, 64, 1000])
        events += parser.feed(stream[pos:pos + step])
        pos += step
        assert parser.buffered <= max(max_payload + 1, max_line + len(b"CONNECT ") + 1)
    assert outcome(events) == CONTROL_LINE
    assert len(events) == 121
    assert typed(events) == typed(feed_chunks([stream], max_payload=max_payload,
                                              max_control_line=max_line))
