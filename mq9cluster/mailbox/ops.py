"""Replicated mailbox operations: their wire form inside a Raft entry, encode and decode together.

Each op is a msgpack array whose first element is its opcode. OPCODES ARE APPEND-ONLY: an entry
written by an older release must still decode; never renumber or reuse one. The proposer stamps
every time (``now_ms``) and every generated id into the op, so applying it is deterministic.
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


Op = CreateOp | AppendOp | DeleteMessageOp | ExpireOp | GroupProgressOp | ClaimOp

_CODES: dict[type, int] = {
    CreateOp: OP_CREATE, AppendOp: OP_APPEND, DeleteMessageOp: OP_DELETE_MESSAGE,
    ExpireOp: OP_EXPIRE, GroupProgressOp: OP_GROUP_PROGRESS, ClaimOp: OP_CLAIM,
}
_TYPES: dict[int, type] = {code: kind for kind, code in _CODES.items()}


def encode(op: Op) -> bytes:
    """The op's bytes, as carried in a group-commit batch."""
    return msgpack.packb([_CODES[type(op)], *op], use_bin_type=True)


def decode(raw: bytes) -> Op:
    """Parse one op; an unknown opcode or shape raises ValueError (a fatal log defect)."""
    fields = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    kind = _TYPES.get(fields[0]) if isinstance(fields, list) and fields else None
    if kind is None:
        raise ValueError(f"unknown mailbox op {fields[:1]!r}")
    return kind(*fields[1:])
