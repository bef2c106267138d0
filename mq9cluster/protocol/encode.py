"""Bytes builders for NATS protocol frames, server-to-client and client-to-server.

Owns the exact wire spelling of each frame. Subjects, sids, reply subjects, queue names, header
blocks and payloads are bytes and are written as given (validation is the caller's job). Must
not touch sockets, asyncio, clocks or other mq9cluster packages.
"""

from __future__ import annotations

import json

PING_FRAME = b"PING\r\n"
PONG_FRAME = b"PONG\r\n"
OK_FRAME = b"+OK\r\n"


def _json(options: dict) -> bytes:
    """Compact JSON, as nats-server writes it."""
    return json.dumps(options, separators=(",", ":")).encode()


def info(options: dict) -> bytes:
    """``INFO {json} \\r\\n`` (nats-server puts a space before the CRLF)."""
    return b"INFO " + _json(options) + b" \r\n"


def connect(options: dict) -> bytes:
    """``CONNECT {json}\\r\\n``."""
    return b"CONNECT " + _json(options) + b"\r\n"


def err(text: str) -> bytes:
    """``-ERR 'text'\\r\\n``."""
    return b"-ERR '" + text.encode() + b"'\r\n"


def msg(subject: bytes, sid: bytes, reply: bytes | None, payload: bytes) -> bytes:
    """``MSG subject sid [reply] size\\r\\npayload\\r\\n``: one delivery."""
    if reply:
        return b"MSG %b %b %b %d\r\n%b\r\n" % (subject, sid, reply, len(payload), payload)
    return b"MSG %b %b %d\r\n%b\r\n" % (subject, sid, len(payload), payload)


def hmsg(subject: bytes, sid: bytes, reply: bytes | None, headers: bytes,
         payload: bytes) -> bytes:
    """``HMSG subject sid [reply] hdrlen total\\r\\nheaders payload\\r\\n``."""
    hdr = len(headers)
    total = hdr + len(payload)
    if reply:
        return b"HMSG %b %b %b %d %d\r\n%b%b\r\n" % (subject, sid, reply, hdr, total, headers,
                                                      payload)
    return b"HMSG %b %b %d %d\r\n%b%b\r\n" % (subject, sid, hdr, total, headers, payload)


def pub(subject: bytes, reply: bytes | None, payload: bytes) -> bytes:
    """``PUB subject [reply] size\\r\\npayload\\r\\n``."""
    if reply:
        return b"PUB %b %b %d\r\n%b\r\n" % (subject, reply, len(payload), payload)
    return b"PUB %b %d\r\n%b\r\n" % (subject, len(payload), payload)


def hpub(subject: bytes, reply: bytes | None, headers: bytes, payload: bytes) -> bytes:
    """``HPUB subject [reply] hdrlen total\\r\\nheaders payload\\r\\n``."""
    hdr = len(headers)
    total = hdr + len(payload)
    if reply:
        return b"HPUB %b %b %d %d\r\n%b%b\r\n" % (subject, reply, hdr, total, headers, payload)
    return b"HPUB %b %d %d\r\n%b%b\r\n" % (subject, hdr, total, headers, payload)


def sub(subject: bytes, queue: bytes | None, sid: bytes) -> bytes:
    """``SUB subject [queue] sid\\r\\n``."""
    if queue:
        return b"SUB %b %b %b\r\n" % (subject, queue, sid)
    return b"SUB %b %b\r\n" % (subject, sid)


def unsub(sid: bytes, max_msgs: int | None = None) -> bytes:
    """``UNSUB sid [max_msgs]\\r\\n``."""
    if max_msgs is None:
        return b"UNSUB %b\r\n" % sid
    return b"UNSUB %b %d\r\n" % (sid, max_msgs)


# -- the route protocol between nodes (docs/architecture.md, "Routes") ------------------------


def route_interest(added: bool, subject: bytes, queue: bytes | None) -> bytes:
    """``RS+ subject [queue]\\r\\n`` (this node gained local interest) or ``RS- ...`` (lost it)."""
    op = b"RS+" if added else b"RS-"
    if queue:
        return b"%b %b %b\r\n" % (op, subject, queue)
    return b"%b %b\r\n" % (op, subject)


def _route_targets(reply: bytes | None, queues: list[bytes] | tuple[bytes, ...]) -> bytes:
    """The RMSG arguments between subject and sizes: ``[reply]``, ``+ reply q...``, ``| q...``."""
    if not queues:
        return b" " + reply if reply else b""
    names = b" ".join(queues)
    return b" + %b %b" % (reply, names) if reply else b" | " + names


def rmsg(subject: bytes, reply: bytes | None, queues: list[bytes] | tuple[bytes, ...],
         payload: bytes) -> bytes:
    """``RMSG subject [targets] size\\r\\npayload\\r\\n``: a message forwarded to a peer node."""
    return b"RMSG %b%b %d\r\n%b\r\n" % (subject, _route_targets(reply, queues), len(payload),
                                          payload)


def rhmsg(subject: bytes, reply: bytes | None, queues: list[bytes] | tuple[bytes, ...],
          headers: bytes, payload: bytes) -> bytes:
    """``RHMSG subject [targets] hdrlen total\\r\\nheaders payload\\r\\n``."""
    hdr = len(headers)
    return b"RHMSG %b%b %d %d\r\n%b%b\r\n" % (subject, _route_targets(reply, queues), hdr,
                                                hdr + len(payload), headers, payload)
