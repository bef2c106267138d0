"""Valid frames parse to the same events however the input is cut."""

from __future__ import annotations

import pytest

from mq9cluster.protocol import PING, Parser, Pub, Sub

from .frames import (
    CLIENT_FRAMES,
    MSG_FRAMES,
    NEXT_FRAMES,
    feed_bytewise,
    feed_chunks,
    feed_whole,
    typed,
)

ALL_FRAMES = [(frame, events, False) for frame, events in CLIENT_FRAMES] + \
    [(frame, events, True) for frame, events in MSG_FRAMES]
IDS = [repr(frame[:24]) for frame, _, _ in ALL_FRAMES]


@pytest.mark.parametrize(("frame", "events", "accept_msg"), ALL_FRAMES, ids=IDS)
def test_whole_and_bytewise(frame: bytes, events: list, accept_msg: bool) -> None:
    assert typed(feed_whole(frame, accept_msg=accept_msg)) == typed(events)
    assert typed(feed_bytewise(frame, accept_msg=accept_msg)) == typed(events)


@pytest.mark.parametrize(("frame", "events", "accept_msg"), ALL_FRAMES, ids=IDS)
def test_split_at_every_index(frame: bytes, events: list, accept_msg: bool) -> None:
    for cut in range(1, len(frame)):
        got = feed_chunks([frame[:cut], frame[cut:]], accept_msg=accept_msg)
        assert typed(got) == typed(events), cut


@pytest.mark.parametrize(("frame", "events", "accept_msg"), ALL_FRAMES, ids=IDS)
def test_partial_next_frame_is_left_over(frame: bytes, events: list, accept_msg: bool) -> None:
    for following, following_events in NEXT_FRAMES:
        for cut in range(1, len(following)):
            parser = Parser(accept_msg=accept_msg)
            assert typed(parser.feed(frame + following[:cut])) == typed(events)
            assert typed(parser.feed(following[cut:])) == typed(following_events)
            assert parser.buffered == 0


def test_pipelined_frames_in_one_feed() -> None:
    frames = [frame for frame, _, _ in ALL_FRAMES]
    events = [event for _, evs, _ in ALL_FRAMES for event in evs]
    stream = b"".join(frames)
    assert typed(feed_whole(stream, accept_msg=True)) == typed(events)
    assert typed(feed_bytewise(stream, accept_msg=True)) == typed(events)


def test_client_parser_refuses_msg() -> None:
    for frame, _ in MSG_FRAMES:
        [violation] = feed_whole(frame)
        assert (violation.text, violation.send_err) == ("Unknown Protocol Operation", True)


def test_fields_are_bytes_sliced_exactly() -> None:
    [pub] = feed_whole(b"PUB a.b c.d 5\r\n\x00\r\n\xff\n\r\n")
    assert pub == Pub(b"a.b", b"c.d", b"\x00\r\n\xff\n", None)
    assert all(type(field) is bytes for field in pub if field is not None)


def test_memoryview_and_bytearray_input() -> None:
    frame = b"PUB foo 3\r\nabc\r\n"
    for data in (bytearray(frame), memoryview(frame)):
        [pub] = Parser().feed(data)
        assert type(pub.subject) is bytes and type(pub.payload) is bytes


def test_empty_feed_is_harmless() -> None:
    parser = Parser()
    assert parser.feed(b"") == []
    assert parser.feed(b"PUB foo 1\r\n") == []
    assert parser.feed(b"") == []
    assert typed(parser.feed(b"x\r\n")) == typed([Pub(b"foo", None, b"x", None)])


def test_max_payload_is_inclusive() -> None:
    parser = Parser(max_payload=10)
    assert typed(parser.feed(b"PUB foo 10\r\n0123456789\r\nHPUB foo 2 10\r\n1234567890\r\n")) == \
        typed([Pub(b"foo", None, b"0123456789", None), Pub(b"foo", None, b"34567890", b"12")])


def test_ping_line_junk_is_dropped_not_buffered() -> None:
    parser = Parser()
    assert parser.feed(b"PING" + b"x" * 5000) == []
    for _ in range(10):
        assert parser.feed(b"x" * 5000) == []
        assert parser.buffered == 4
    assert typed(parser.feed(b"\r\n")) == typed([PING])


def test_blanks_after_op_are_not_buffered() -> None:
    parser = Parser()
    assert parser.feed(b"PUB" + b" " * 6000) == []
    assert parser.buffered == 4
    assert parser.feed(b"\t" * 6000 + b"foo") == []
    assert typed(parser.feed(b" 0\r\n\r\n")) == typed([Pub(b"foo", None, b"", None)])


@pytest.mark.parametrize(("line", "event"), [
    (b"SUB " + b"a" * 4094 + b" 1\r\n", Sub(b"a" * 4094, None, b"1")),
    (b"SUB    " + b"a" * 4094 + b" 1\r\n", Sub(b"a" * 4094, None, b"1")),
    (b"PUB " + b"a" * 4094 + b" 0\r\n\r\n", Pub(b"a" * 4094, None, b"", None)),
    (b"PUB " + b"a" * 4094 + b" 0\n\r\n", Pub(b"a" * 4094, None, b"", None)),
], ids=["sub", "sub-blanks", "pub-crlf", "pub-lf"])
def test_control_line_at_the_limit_is_accepted(line: bytes, event: object) -> None:
    assert typed(feed_whole(line)) == typed([event])
    assert typed(feed_bytewise(line)) == typed([event])
