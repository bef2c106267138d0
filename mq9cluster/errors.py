"""The one exception tree of mq9cluster. Every error the broker raises on purpose derives from Mq9Error."""

from __future__ import annotations


class Mq9Error(Exception):
    """Base of every mq9cluster error."""


class ConfigError(Mq9Error):
    """Settings are missing, malformed or contradictory; the message says which and why."""


class NotSupportedYet(ConfigError):
    """An option nats-server accepts that this release does not implement yet."""


class JournalCorrupt(Mq9Error):
    """The Raft log or its metadata is damaged beyond a torn tail; the node must not start."""
