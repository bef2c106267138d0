"""Typed records the store reads and writes. Plain data: no I/O, no validation beyond types."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple


class Priority(IntEnum):
    """Message priority levels, highest first in delivery. ``HIGH`` is an alias of ``URGENT``."""

    LOW = 0
    NORMAL = 1
    URGENT = 2
    HIGH = 2
    CRITICAL = 3


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A mailbox record.

    ``next_msg_id``, ``msg_count`` and ``msg_bytes`` (payload + headers of stored messages) are
    owned by the store: ``Batch.put_mailbox`` ignores them in its argument.
    """

    address: str
    created_at: int
    ttl: int
    expires_at: int
    public: bool
    desc: str
    next_msg_id: int = 1
    msg_count: int = 0
    msg_bytes: int = 0


class Message(NamedTuple):
    """A stored message; ``headers`` is None when the message has none (an empty block too)."""

    address: str
    priority: int
    msg_id: int
    ts_ms: int
    payload: bytes
    headers: bytes | None


class MessageSummary(NamedTuple):
    """What a LIST request shows of one message."""

    msg_id: int
    priority: int
    ts_ms: int


class Expiry(NamedTuple):
    """An entry of the expiry index: ``address`` expires at ``expires_at`` (unix ms)."""

    expires_at: int
    address: str
