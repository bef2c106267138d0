"""What an applied Raft entry changed, as handed from the state machine to delivery."""

from __future__ import annotations

from typing import NamedTuple

from mq9cluster.store import Mailbox, Message


class Appended(NamedTuple):
    """A message was stored."""

    message: Message


class Created(NamedTuple):
    """A mailbox came into existence."""

    mailbox: Mailbox


class Removed(NamedTuple):
    """A mailbox and its messages are gone (``reason``: expired or deleted)."""

    mailbox: Mailbox
    reason: str


class MessageDeleted(NamedTuple):
    """One message was deleted."""

    address: str
    msg_id: int


Change = Appended | Created | Removed | MessageDeleted
