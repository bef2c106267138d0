"""Protocol events: what the sans-IO parser yields for each complete NATS operation.

Subjects, reply subjects, queue names and sids are ``bytes`` taken from the wire (never
decoded on the hot path); payloads and header blocks are ``bytes``. Owns no I/O.
"""

from __future__ import annotations

from typing import NamedTuple


class Connect(NamedTuple):
    """CONNECT with its JSON options decoded to a dict."""

    options: dict


class Info(NamedTuple):
    """INFO with its JSON decoded to a dict (sent by servers; clients seldom send it)."""

    options: dict


class Pub(NamedTuple):
    """PUB or HPUB. ``headers`` is the raw header block (``NATS/1.0...\\r\\n\\r\\n``) or None."""

    subject: bytes
    reply: bytes | None
    payload: bytes
    headers: bytes | None


class Msg(NamedTuple):
    """MSG or HMSG (server to client direction; parsed only with ``accept_msg=True``)."""

    subject: bytes
    sid: bytes
    reply: bytes | None
    payload: bytes
    headers: bytes | None


class Sub(NamedTuple):
    """SUB subject [queue] sid."""

    subject: bytes
    queue: bytes | None
    sid: bytes


class Unsub(NamedTuple):
    """UNSUB sid [max_msgs]."""

    sid: bytes
    max_msgs: int | None


class RouteSub(NamedTuple):
    """RS+ subject [queue]: a peer node has local interest (route protocol only)."""

    subject: bytes
    queue: bytes | None


class RouteUnsub(NamedTuple):
    """RS- subject [queue]: a peer node lost that interest (route protocol only)."""

    subject: bytes
    queue: bytes | None


class RouteMsg(NamedTuple):
    """RMSG or RHMSG: a message forwarded by a peer node (route protocol only).

    ``queues`` names the queue groups the receiving node must serve (one member each); its plain
    subscriptions always get the message.
    """

    subject: bytes
    reply: bytes | None
    queues: tuple[bytes, ...]
    payload: bytes
    headers: bytes | None


class Ping(NamedTuple):
    """PING."""


class Pong(NamedTuple):
    """PONG."""


class Ok(NamedTuple):
    """+OK."""


class Err(NamedTuple):
    """-ERR 'text' (the quotes stripped)."""

    text: str


class Violation(NamedTuple):
    """The input broke the protocol; the parser is now stuck in its error state.

    ``text`` is the exact text nats-server puts in its ``-ERR '...'`` line; ``send_err`` says
    whether the server sends that line before closing (nats-server closes silently on some
    errors, e.g. bad CONNECT JSON or a wrong argument count). ``detail`` quotes the parser state
    and a snippet of the offending input, for logs only.
    """

    text: str
    send_err: bool
    detail: str


PING = Ping()
PONG = Pong()
OK = Ok()

Event = (Connect | Info | Pub | Msg | Sub | Unsub | RouteSub | RouteUnsub | RouteMsg | Ping | Pong | Ok
         | Err | Violation)
