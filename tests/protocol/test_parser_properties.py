"""Property: any sequence of valid frames, cut anywhere, parses to the same events."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from mq9cluster.protocol import OK, PING, PONG, Connect, Err, Msg, Pub, Sub, Unsub

from .frames import feed_chunks, feed_whole, typed

_WHITESPACE = b" \t\r\n\x0b\x0c"

tokens = st.lists(st.integers(0, 255).filter(lambda b: b not in _WHITESPACE),
                  min_size=1, max_size=12).map(bytes)
optional_tokens = st.none() | tokens
payloads = st.binary(max_size=300) | st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b"\n\r"])
blanks = st.lists(st.sampled_from([b" ", b"\t"]), min_size=1, max_size=3).map(b"".join)
line_ends = st.sampled_from([b"\r\n", b"\n", b" \r\n", b"\t\n", b"  \t\r\n"])
sizes = st.integers(0, 10**6)


@st.composite
def op_name(draw: st.DrawFn, name: bytes) -> bytes:
    """``name`` in random letter case."""
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return bytes(c ^ 0x20 if flip and chr(c).isalpha() else c for c, flip in zip(name, flips))


@st.composite
def control_line(draw: st.DrawFn, name: bytes, *args: bytes | None) -> bytes:
    """``NAME arg arg...`` with random case, blanks and line end; None args are left out."""
    parts = [draw(op_name(name))] + [arg for arg in args if arg is not None]
    line = parts[0]
    for part in parts[1:]:
        line += draw(blanks) + part
    return line + draw(line_ends)


@st.composite
def message_frame(draw: st.DrawFn) -> tuple[bytes, object]:
    """PUB, HPUB, MSG or HMSG with its event."""
    kind = draw(st.sampled_from([b"PUB", b"HPUB", b"MSG", b"HMSG"]))
    subject, reply, sid = draw(tokens), draw(optional_tokens), draw(tokens)
    payload = draw(payloads)
    headers = draw(payloads) if kind.startswith(b"H") else None
    sizes_ = [b"%d" % len(payload)] if headers is None else \
        [b"%d" % len(headers), b"%d" % (len(headers) + len(payload))]
    is_msg = kind.endswith(b"MSG")
    line = draw(control_line(kind, subject, sid if is_msg else None, reply, *sizes_))
    body = (headers or b"") + payload + b"\r\n"
    event = Msg(subject, sid, reply, payload, headers) if is_msg else \
        Pub(subject, reply, payload, headers)
    return line + body, event


@st.composite
def other_frame(draw: st.DrawFn) -> tuple[bytes, object]:
    """SUB, UNSUB, PING, PONG, +OK, -ERR or CONNECT with its event."""
    kind = draw(st.sampled_from(["SUB", "UNSUB", "PING", "PONG", "OK", "ERR", "CONNECT"]))
    if kind == "SUB":
        subject, queue, sid = draw(tokens), draw(optional_tokens), draw(tokens)
        return draw(control_line(b"SUB", subject, queue, sid)), Sub(subject, queue, sid)
    if kind == "UNSUB":
        sid, max_msgs = draw(tokens), draw(st.none() | sizes)
        line = draw(control_line(b"UNSUB", sid, None if max_msgs is None else b"%d" % max_msgs))
        return line, Unsub(sid, max_msgs)
    if kind == "ERR":
        text = draw(st.text(st.characters(codec="utf-8", exclude_characters="\r\n'"),
                            max_size=20))
        return draw(control_line(b"-ERR", b"'" + text.encode() + b"'")), Err(text)
    if kind == "CONNECT":
        options = draw(st.fixed_dictionaries({}, optional={
            "verbose": st.booleans(), "name": st.text(max_size=10), "protocol": st.integers(0, 1),
            "headers": st.booleans(), "extra": st.lists(st.integers(), max_size=3)}))
        return draw(control_line(b"CONNECT", json.dumps(options).encode())), Connect(options)
    name = b"+OK" if kind == "OK" else kind.encode()
    return draw(control_line(name)), {"PING": PING, "PONG": PONG, "OK": OK}[kind]


frames = st.lists(message_frame() | other_frame(), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(frames, st.data())
def test_random_frames_random_chunks(frame_list: list, data: st.DataObject) -> None:
    stream = b"".join(frame for frame, _ in frame_list)
    expected = typed([event for _, event in frame_list])
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    assert typed(feed_whole(stream, accept_msg=True)) == expected
    assert typed(feed_chunks(chunks, accept_msg=True)) == expected
