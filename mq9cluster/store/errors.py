"""Errors raised by the store, under the project's Mq9Error base."""

from __future__ import annotations

from mq9cluster.errors import Mq9Error


class StoreError(Mq9Error):
    """The store cannot do what was asked; the message says which store and why."""


class StoreFormatError(StoreError):
    """The directory holds a store of another format version, or no mq9cluster store at all."""


class NoSuchMailbox(StoreError):
    """A batch mutation named a mailbox that does not exist in the batch's view.

    Apply code checks ``Batch.has_mailbox`` first and turns absence into a user error result;
    reaching this exception is a bug in the caller.
    """


class AlreadyApplied(StoreError):
    """A batch was opened or committed for a Raft index at or below ``last_applied``."""
