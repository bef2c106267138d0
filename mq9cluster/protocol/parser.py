"""Sans-IO parser for the NATS client protocol (and the route protocol between nodes): bytes
in, events out.

Owns framing only: control lines, argument counts and sizes, payload framing, CONNECT/INFO JSON
decoding and the limits on unparsed input. Subject validity is the caller's job
(``subject.py``). Must not touch sockets, asyncio, clocks or other mq9cluster packages.

Behaviour follows nats-server 2.9.10 as observed on the wire (see ``Parser``'s docstring for the
few deliberate differences).
"""

from __future__ import annotations

import json
from typing import NamedTuple

from mq9cluster.protocol.events import (
    OK,
    PING,
    PONG,
    Connect,
    Err,
    Event,
    Info,
    Msg,
    Pub,
    RouteMsg,
    RouteSub,
    RouteUnsub,
    Sub,
    Unsub,
    Violation,
)

UNKNOWN_OPERATION = "Unknown Protocol Operation"
MAX_CONTROL_LINE = "maximum control line exceeded"
MAX_PAYLOAD = "Maximum Payload Violation"
# nats-server closes without an -ERR line for these; the texts are for logs.
PARSE_ERROR = "Parse Error"
BAD_SIZE = "Bad or Missing Size"
BAD_HEADER_SIZE = "Bad or Missing Header Size"
HEADER_TOO_BIG = "Header Size larger than Total Size"
BAD_JSON = "Bad JSON"

_SNIPPET = 32  # bytes of offending input quoted in Violation.detail
_MAX_SIZE_DIGITS = 9  # nats-server's parseSize rejects longer sizes, leading zeros included
_SEP = b" \t"
_new = tuple.__new__  # builds an event without NamedTuple.__new__'s Python-level call

# CONNECT fields nats-server decodes into typed Go fields; a mismatch makes it close silently.
# Go matches JSON keys case-insensitively; null leaves the default in place.
_CONNECT_TYPES: dict[str, type] = {
    **dict.fromkeys(
        ("verbose", "pedantic", "tls_required", "echo", "headers", "no_responders", "new_account"),
        bool,
    ),
    **dict.fromkeys(
        ("auth_token", "user", "pass", "name", "lang", "version", "nkey", "jwt", "sig", "account",
         "remote_account"),
        str,
    ),
    "protocol": int,
}
_INT64 = range(-(2**63), 2**63)


class _Op(NamedTuple):
    """One protocol operation: its upper-case name and how the rest of the line is treated."""

    name: bytes
    needs_sep: bool  # a space or tab must follow the name ("PUB foo" yes, "CONNECT{}" no)
    bare: bool  # the rest of the line is ignored and unbounded (PING, PONG, +OK)
    state: str  # nats-server's parser state name, quoted in Violation.detail


_PUB = _Op(b"PUB", True, False, "PUB_ARG")
_HPUB = _Op(b"HPUB", True, False, "HPUB_ARG")
_SUB = _Op(b"SUB", True, False, "SUB_ARG")
_UNSUB = _Op(b"UNSUB", True, False, "UNSUB_ARG")
_PING = _Op(b"PING", False, True, "OP_PING")
_PONG = _Op(b"PONG", False, True, "OP_PONG")
_OK = _Op(b"+OK", False, True, "OP_PLUS_OK")
_ERR = _Op(b"-ERR", True, False, "MINUS_ERR_ARG")
_CONNECT = _Op(b"CONNECT", False, False, "CONNECT_ARG")
_INFO = _Op(b"INFO", False, False, "INFO_ARG")
_MSG = _Op(b"MSG", True, False, "MSG_ARG")
_HMSG = _Op(b"HMSG", True, False, "HMSG_ARG")

_RS_PLUS = _Op(b"RS+", True, False, "RS+_ARG")
_RS_MINUS = _Op(b"RS-", True, False, "RS-_ARG")
_RMSG = _Op(b"RMSG", True, False, "RMSG_ARG")
_RHMSG = _Op(b"RHMSG", True, False, "RHMSG_ARG")

_CLIENT_OPS = (_PUB, _HPUB, _SUB, _UNSUB, _PING, _PONG, _OK, _ERR, _CONNECT, _INFO)
_ROUTE_OPS = (_INFO, _PING, _PONG, _OK, _ERR, _RS_PLUS, _RS_MINUS, _RMSG, _RHMSG)
_PARTIAL = _Op(b"", False, False, "OP_START")  # the input so far may still become an op


def _op_table(ops: tuple[_Op, ...]) -> dict[bytes, tuple[_Op, ...]]:
    """Group ops by their first byte for dispatch."""
    table: dict[bytes, tuple[_Op, ...]] = {}
    for op in ops:
        table[op.name[:1]] = table.get(op.name[:1], ()) + (op,)
    return table


_CLIENT_TABLE = _op_table(_CLIENT_OPS)
_FULL_TABLE = _op_table(_CLIENT_OPS + (_MSG, _HMSG))
_ROUTE_TABLE = _op_table(_ROUTE_OPS)


def _match_op(table: dict[bytes, tuple[_Op, ...]], head: bytes) -> _Op | None:
    """The op ``head`` (upper-cased start of a line) begins with; _PARTIAL if undecided yet."""
    for op in table.get(head[:1], ()):
        name = op.name
        if head.startswith(name):
            if not op.needs_sep:
                return op
            if len(head) == len(name):
                return _PARTIAL
            return op if head[len(name)] in _SEP else None
        if name.startswith(head):
            return _PARTIAL
    return None


def _args_len(args: bytes | bytearray) -> int:
    """What nats-server checks against max_control_line: the line after the op name and its
    blanks, without a final CR."""
    args = args.lstrip(_SEP)
    return len(args) - (1 if args[-1:] == b"\r" else 0)


def _size(arg: bytes) -> int:
    """nats-server's parseSize: up to 9 ASCII digits, else -1."""
    if arg.isdigit() and len(arg) <= _MAX_SIZE_DIGITS:
        return int(arg)
    return -1


def _json_object(arg: bytes) -> dict | None:
    """Decode a JSON object as Go would for a struct: null is {}, other non-objects fail."""
    try:
        value = json.loads(arg.decode("utf-8", "replace"))
    except ValueError:
        return None
    if value is None:
        return {}
    return value if isinstance(value, dict) else None


def _connect_options(arg: bytes) -> dict | None:
    """CONNECT options with known keys folded to lower case, nulls dropped, types checked."""
    raw = _json_object(arg)
    if raw is None:
        return None
    options = {}
    for key, value in raw.items():
        folded = key.lower()
        if folded in _CONNECT_TYPES:
            expected = _CONNECT_TYPES[folded]
            if value is not None and (type(value) is not expected
                                      or (expected is int and value not in _INT64)):
                return None
            key = folded
        if value is not None:
            options[key] = value
    return options


def _route_targets(middle: list[bytes]) -> tuple[bytes | None, tuple[bytes, ...]] | None:
    """Reply and queue names of an RMSG: ``[reply]``, ``+ reply queue...`` or ``| queue...``."""
    if not middle:
        return None, ()
    if len(middle) == 1:
        return middle[0], ()
    if middle[0] == b"+":
        return middle[1], tuple(middle[2:])
    if middle[0] == b"|":
        return None, tuple(middle[1:])
    return None


def _err_text(arg: bytes) -> str:
    """The text of ``-ERR 'text'`` without the quotes."""
    text = arg.strip().decode("utf-8", "replace")
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    return text


class Parser:
    """Incremental NATS protocol parser: ``feed(bytes) -> [events]``, no I/O.

    Parses client-to-server operations (CONNECT, PUB, HPUB, SUB, UNSUB, PING, PONG, +OK, -ERR,
    INFO) and, with ``accept_msg=True``, MSG and HMSG. With ``route=True`` it parses the route
    protocol instead: INFO, PING, PONG, +OK, -ERR, RS+, RS-, RMSG, RHMSG. A broken input yields one ``Violation``
    after the good events before it; the parser then stays stuck and returns ``[]``.

    Unparsed input is bounded: a partial control line by ``max_control_line`` (+1 for a
    pending CR), a partial payload by ``max_payload + 2``. Payloads are skipped by their
    declared size, never scanned. Differences from nats-server 2.9.10, all on garbage input:
    every ASCII whitespace byte (also CR, VT, FF inside a line) separates arguments, and a
    control line whose arguments exceed the limit is refused even when it arrives in one read.
    """

    __slots__ = ("_max_payload", "_max_control_line", "_table", "_fast_pub", "_tail", "_frame",
                 "_dead")

    def __init__(self, max_payload: int = 1048576, max_control_line: int = 4096,
                 accept_msg: bool = False, route: bool = False) -> None:
        self._max_payload = max_payload
        self._max_control_line = max_control_line
        self._table = _ROUTE_TABLE if route else _FULL_TABLE if accept_msg else _CLIENT_TABLE
        self._fast_pub = not route  # the inlined PUB path below bypasses the op table
        self._tail = bytearray()  # unparsed input: a partial line, or a partial payload
        self._frame: tuple | None = None  # (op, subject, sid, reply, hdr, size) awaiting payload
        self._dead = False

    @property
    def buffered(self) -> int:
        """Bytes held back until more input arrives."""
        return len(self._tail)

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data`` and return the events it completes (with any earlier held bytes)."""
        if self._dead:
            return []
        if type(data) is not bytes:
            data = bytes(data)
        events: list[Event] = []
        tail = self._tail
        if tail:
            tail += data
            frame = self._frame
            if frame is not None and len(tail) < frame[5] + 2:
                self._check_partial_payload(frame[5], events)
                return events
            data = bytes(tail)
            tail.clear()
        self._parse(data, events)
        return events

    def _parse(self, data: bytes, events: list[Event]) -> None:
        """Parse whole frames of ``data``; keep a trailing partial frame in the tail."""
        pos = 0
        if self._frame is not None:
            pos = self._payload(data, 0, self._frame, events)
        find = data.find
        append = events.append
        end = len(data)
        max_payload = self._max_payload
        max_line = self._max_control_line
        while 0 <= pos < end:
            nl = find(b"\n", pos)
            if nl < 0:
                self._tail += data[pos:]
                self._check_partial_line(events)
                return
            head = data[pos:pos + 4]
            if (head == b"PUB " or head == b"pub ") and nl - pos <= max_line and self._fast_pub:
                args = data[pos + 4:nl].split()
                if len(args) == 2:
                    subject, size_arg = args
                    reply = None
                elif len(args) == 3:
                    subject, reply, size_arg = args
                else:
                    pos = self._fail(events, PARSE_ERROR, False, _PUB.state, data, pos)
                    continue
                if not size_arg.isdigit() or len(size_arg) > _MAX_SIZE_DIGITS:
                    pos = self._fail(events, BAD_SIZE, False, _PUB.state, data, pos)
                    continue
                size = int(size_arg)
                if size > max_payload:
                    pos = self._fail(events, MAX_PAYLOAD, True, _PUB.state, data, pos)
                    continue
                start = nl + 1
                stop = start + size
                if stop + 2 <= end and data[stop] == 13 and data[stop + 1] == 10:
                    append(_new(Pub, (subject, reply, data[start:stop], None)))
                    pos = stop + 2
                else:
                    pos = self._payload(data, start, (_PUB, subject, None, reply, -1, size),
                                        events)
            else:
                pos = self._line(data, pos, nl, events)

    def _line(self, data: bytes, pos: int, nl: int, events: list[Event]) -> int:
        """Handle the complete control line ``data[pos:nl]``; return the next position or -1."""
        op = _match_op(self._table, data[pos:pos + 8].upper())
        if op is None or op is _PARTIAL:
            return self._fail(events, UNKNOWN_OPERATION, True, "OP_START", data, pos)
        if op.bare:
            events.append(PING if op is _PING else PONG if op is _PONG else OK)
            return nl + 1
        args_at = pos + len(op.name)
        if nl - pos > self._max_control_line and _args_len(data[args_at:nl]) > \
                self._max_control_line:
            return self._fail(events, MAX_CONTROL_LINE, True, op.state, data, pos)
        if op is _CONNECT or op is _INFO:
            return self._json_line(op, data[args_at:nl], data, pos, nl, events)
        if op is _ERR:
            events.append(Err(_err_text(data[args_at:nl])))
            return nl + 1
        args = data[args_at:nl].split()
        if op is _SUB:
            return self._sub(args, data, pos, nl, events)
        if op is _UNSUB:
            return self._unsub(args, data, pos, nl, events)
        if op is _RS_PLUS or op is _RS_MINUS:
            return self._route_interest(op, args, data, pos, nl, events)
        return self._message_args(op, args, data, pos, nl, events)

    def _json_line(self, op: _Op, arg: bytes, data: bytes, pos: int, nl: int,
                   events: list[Event]) -> int:
        """CONNECT or INFO with a JSON object."""
        options = _connect_options(arg) if op is _CONNECT else _json_object(arg)
        if options is None:
            return self._fail(events, BAD_JSON, False, op.state, data, pos)
        events.append(Connect(options) if op is _CONNECT else Info(options))
        return nl + 1

    def _sub(self, args: list[bytes], data: bytes, pos: int, nl: int,
             events: list[Event]) -> int:
        """SUB subject [queue] sid."""
        if len(args) == 2:
            events.append(Sub(args[0], None, args[1]))
        elif len(args) == 3:
            events.append(Sub(*args))
        else:
            return self._fail(events, PARSE_ERROR, False, _SUB.state, data, pos)
        return nl + 1

    def _unsub(self, args: list[bytes], data: bytes, pos: int, nl: int,
               events: list[Event]) -> int:
        """UNSUB sid [max]; an unparsable max acts as none (nats-server unsubscribes at once)."""
        if len(args) == 1:
            events.append(Unsub(args[0], None))
        elif len(args) == 2:
            max_msgs = _size(args[1])
            events.append(Unsub(args[0], max_msgs if max_msgs >= 0 else None))
        else:
            return self._fail(events, PARSE_ERROR, False, _UNSUB.state, data, pos)
        return nl + 1

    def _route_interest(self, op: _Op, args: list[bytes], data: bytes, pos: int, nl: int,
                        events: list[Event]) -> int:
        """RS+ / RS- subject [queue]."""
        if len(args) not in (1, 2):
            return self._fail(events, PARSE_ERROR, False, op.state, data, pos)
        kind = RouteSub if op is _RS_PLUS else RouteUnsub
        events.append(kind(args[0], args[1] if len(args) == 2 else None))
        return nl + 1

    def _message_args(self, op: _Op, args: list[bytes], data: bytes, pos: int, nl: int,
                      events: list[Event]) -> int:
        """PUB, HPUB, MSG, HMSG, RMSG, RHMSG arguments; then the payload."""
        with_headers = op is _HPUB or op is _HMSG or op is _RHMSG
        if op is _RMSG or op is _RHMSG:
            targets = _route_targets(args[1:-2 if with_headers else -1])
            if targets is None or len(args) < (3 if with_headers else 2):
                return self._fail(events, PARSE_ERROR, False, op.state, data, pos)
            reply, sid = targets  # the frame's sid slot carries the queue names
        else:
            fixed = 2 if op is _PUB else 3 if op is _HPUB or op is _MSG else 4
            if len(args) not in (fixed, fixed + 1):
                return self._fail(events, PARSE_ERROR, False, op.state, data, pos)
            sid = args[1] if op is _MSG or op is _HMSG else None
            reply = args[-2 if op is _PUB or op is _MSG else -3] if len(args) > fixed else None
        hdr = _size(args[-2]) if with_headers else -1
        size = _size(args[-1])
        if hdr < 0 and with_headers:
            return self._fail(events, BAD_HEADER_SIZE, False, op.state, data, pos)
        if size >= 0 and hdr > size:
            return self._fail(events, HEADER_TOO_BIG, False, op.state, data, pos)
        if size < 0:
            return self._fail(events, BAD_SIZE, False, op.state, data, pos)
        if size > self._max_payload:
            return self._fail(events, MAX_PAYLOAD, True, op.state, data, pos)
        return self._payload(data, nl + 1, (op, args[0], sid, reply, hdr, size), events)

    def _payload(self, data: bytes, start: int, frame: tuple, events: list[Event]) -> int:
        """Emit the frame whose payload starts at ``start``, or keep it pending."""
        op, subject, sid, reply, hdr, size = frame
        stop = start + size
        if stop + 2 > len(data):
            self._frame = frame
            self._tail += data[start:]
            self._check_partial_payload(size, events)
            return -1
        if data[stop] != 13 or data[stop + 1] != 10:
            return self._fail(events, UNKNOWN_OPERATION, True, "MSG_END", data, stop)
        self._frame = None
        if hdr < 0:
            headers, payload = None, data[start:stop]
        else:
            headers, payload = data[start:start + hdr], data[start + hdr:stop]
        if op is _PUB or op is _HPUB:
            events.append(_new(Pub, (subject, reply, payload, headers)))
        elif op is _MSG or op is _HMSG:
            events.append(_new(Msg, (subject, sid, reply, payload, headers)))
        else:
            events.append(_new(RouteMsg, (subject, reply, sid, payload, headers)))
        return stop + 2

    def _check_partial_payload(self, size: int, events: list[Event]) -> None:
        """Fail early if the byte after an incomplete payload is there and is not CR."""
        tail = self._tail
        if len(tail) > size and tail[size] != 13:
            self._fail(events, UNKNOWN_OPERATION, True, "MSG_END", bytes(tail), size)

    def _check_partial_line(self, events: list[Event]) -> None:
        """Check a partial line as nats-server would byte by byte, and keep it bounded."""
        tail = self._tail
        op = _match_op(self._table, bytes(tail[:8]).upper())
        if op is None:
            self._fail(events, UNKNOWN_OPERATION, True, "OP_START", bytes(tail), 0)
        elif op is _PARTIAL:
            return
        elif op.bare:
            del tail[len(op.name):]  # the rest of a PING line is ignored; drop it
        else:
            args = tail[len(op.name):].lstrip(_SEP)
            del tail[len(op.name) + 1:len(tail) - len(args)]  # keep one separator
            if _args_len(args) > self._max_control_line:
                self._fail(events, MAX_CONTROL_LINE, True, op.state, bytes(tail), 0)

    def _fail(self, events: list[Event], text: str, send_err: bool, state: str,
              data: bytes, at: int) -> int:
        """Record a Violation and enter the stuck error state; return -1."""
        snippet = data[at:at + _SNIPPET]
        events.append(Violation(text, send_err, f"state={state} proto={snippet!r}"))
        self._dead = True
        self._frame = None
        self._tail = bytearray()
        return -1
