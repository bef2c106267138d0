"""Replicated mailbox operations: their wire form inside a Raft entry, encode and decode together.

Each op is a msgpack array whose first element is its opcode. OPCODES ARE APPEND-ONLY: an entry
written by an older release must still decode; never renumber or reuse one. The proposer stamps
every time (``now_ms``) and every generated id into the op, so applying it is deterministic; how
apply weighs a stamp against the replicated cluster clock is in mailbox/clock.py.
"""

from __future__ import annotations

from typing import NamedTuple

import msgpack

# Append-only. Changing a number or a field order breaks every stored Raft log.
OP_CREATE = 1
OP_APPEND = 2
OP_DELETE_MESSAGE = 3
OP_EXPIRE = 4
OP_GROUP_PROGRESS = 5
OP_CLAIM = 6
OP_SEND = 7
OP_TICK = 8
OP_FETCH = 9
OP_ACK = 10
OP_REGISTER = 11
OP_UNREGISTER = 12
OP_REPORT = 13
OP_CLOCK = 14


class CreateOp(NamedTuple):
    """Create ``address`` (idempotent for public names), unless ``max_mailboxes`` exist already
    (0: no limit; it rides in the op like AppendOp's limits)."""

    address: str
    now_ms: int
    ttl: int
    public: bool
    desc: str
    max_mailboxes: int = 0


class AppendOp(NamedTuple):
    """Store one message, unless the mailbox would then hold more than ``max_bytes``, or all
    mailboxes together more than ``max_total_bytes`` (0: no limit).

    The limits ride in the op so every node decides alike whatever its own options say;
    entries written before they existed decode with the defaults.
    """

    address: str
    priority: int
    now_ms: int
    payload: bytes
    headers: bytes | None
    max_bytes: int = 0
    max_total_bytes: int = 0


class DeleteMessageOp(NamedTuple):
    """Delete one stored message."""

    address: str
    msg_id: int


class ExpireOp(NamedTuple):
    """Remove ``address`` if it has expired by ``now_ms``."""

    address: str
    now_ms: int


class GroupProgressOp(NamedTuple):
    """A queue group has been given messages up to ``cursor`` ({priority: msg_id}).

    Written by 0.1 only (queue groups now claim); still applied when an old log replays.
    """

    address: str
    group: str
    cursor: dict[int, int]


class ClaimOp(NamedTuple):
    """Give a queue group's member node the next ``limit`` unclaimed messages of ``levels``."""

    address: str
    group: str
    levels: list[int]
    limit: int


class SendOp(NamedTuple):
    """Dialect 3: store one message with options. ``key`` replaces the last message with the same
    key; ``delay_ms`` holds it back until ``now_ms + delay_ms``; ``ttl_ms`` ends it that long after
    it becomes visible (0 = never). The storage limits are those of ``AppendOp`` (0: no limit),
    checked when the send applies, delayed or not; entries written before they existed decode
    with the defaults."""

    address: str
    priority: int
    now_ms: int
    payload: bytes
    headers: bytes | None
    key: str
    tags: list[str]
    ttl_ms: int
    delay_ms: int
    max_bytes: int = 0
    max_total_bytes: int = 0


class TickOp(NamedTuple):
    """Release delayed messages due at ``now_ms`` and remove messages whose TTL has ended."""

    now_ms: int
    limit: int


class FetchOp(NamedTuple):
    """Hand a pull group its next ``limit`` messages: those whose ack-wait ran out, then new ones.

    ``deliver`` (earliest|latest|from_time|from_id) with ``start`` places a group that has no
    state yet, or any group when ``force``. ``ack_wait_ms`` > 0 sets the group's ack-wait.
    """

    address: str
    group: str
    now_ms: int
    limit: int
    deliver: str
    start: int
    force: bool
    ack_wait_ms: int


class AckOp(NamedTuple):
    """A pull group is done with ``msg_ids``: they are never offered to it again."""

    address: str
    group: str
    msg_ids: list[int]


class RegisterOp(NamedTuple):
    """Register (or replace) the agent card of ``mailbox``; ``card`` is its JSON text."""

    mailbox: str
    now_ms: int
    card: str


class UnregisterOp(NamedTuple):
    """Remove the agent card of ``mailbox``."""

    mailbox: str


class ReportOp(NamedTuple):
    """A registered agent reports its state (``report``: JSON text)."""

    mailbox: str
    now_ms: int
    report: str


class ClockOp(NamedTuple):
    """Node ``reporter`` (its Raft address) read ``wall_ms`` on its clock and sees ``voters``
    voting members (see mailbox/clock.py)."""

    reporter: str
    wall_ms: int
    voters: int


Op = (CreateOp | AppendOp | DeleteMessageOp | ExpireOp | GroupProgressOp | ClaimOp | SendOp | TickOp
      | FetchOp | AckOp | RegisterOp | UnregisterOp | ReportOp | ClockOp)

_CODES: dict[type, int] = {
    CreateOp: OP_CREATE, AppendOp: OP_APPEND, DeleteMessageOp: OP_DELETE_MESSAGE,
    ExpireOp: OP_EXPIRE, GroupProgressOp: OP_GROUP_PROGRESS, ClaimOp: OP_CLAIM,
    SendOp: OP_SEND, TickOp: OP_TICK, FetchOp: OP_FETCH, AckOp: OP_ACK,
    RegisterOp: OP_REGISTER, UnregisterOp: OP_UNREGISTER, ReportOp: OP_REPORT, ClockOp: OP_CLOCK,
}
_TYPES: dict[int, type] = {code: kind for kind, code in _CODES.items()}


# One packer for every encode: msgpack.packb builds a new one per call, which was more than half
# of an op's encoding time. Packing plain values never leaves C or drops the GIL, so one call
# cannot interleave with another even across threads.
_PACK = msgpack.Packer(use_bin_type=True).pack


def encode(op: Op) -> bytes:
    """The op's bytes, as carried in a group-commit batch."""
    return _PACK([_CODES[type(op)], *op])


def decode(raw: bytes) -> Op:
    """Parse one op; an unknown opcode or shape raises ValueError (a fatal log defect)."""
    fields = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    kind = _TYPES.get(fields[0]) if isinstance(fields, list) and fields else None
    if kind is None:
        raise ValueError(f"unknown mailbox op {fields[:1]!r}")
    return kind(*fields[1:])
