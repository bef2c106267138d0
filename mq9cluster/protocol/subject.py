"""Subject and queue-name checks on the raw bytes from the wire.

Owns the syntax rules only (tokens, wildcards, whitespace), not permissions or matching. Must
not touch sockets, asyncio, clocks or other mq9cluster packages.

Rules, as nats-server: tokens are separated by ``.`` and must be non-empty; ``*`` and ``>``
are wildcards only as whole tokens (``foo*`` is a literal) and ``>`` only as the last token.
Whitespace is refused anywhere (nats-server 2.9.10 lets CR, VT and FF through on SUB).
"""

from __future__ import annotations

_WHITESPACE = b" \t\r\n\x0b\x0c"


def _no_whitespace(value: bytes) -> bool:
    """True if ``value`` has no ASCII whitespace byte."""
    return len(value.translate(None, _WHITESPACE)) == len(value)


def valid_subscribe_subject(subject: bytes) -> bool:
    """A subject a client may subscribe to: wildcards allowed, ``>`` only last."""
    tokens = subject.split(b".")
    return (b"" not in tokens and b">" not in tokens[:-1] and _no_whitespace(subject))


def valid_publish_subject(subject: bytes) -> bool:
    """A literal subject (no wildcard token), as pedantic mode requires for PUB."""
    tokens = subject.split(b".")
    return (b"" not in tokens and b"*" not in tokens and b">" not in tokens
            and _no_whitespace(subject))


def has_wildcard(subject: bytes) -> bool:
    """True if some token of ``subject`` is ``*`` or ``>``."""
    if b"*" not in subject and b">" not in subject:
        return False
    tokens = subject.split(b".")
    return b"*" in tokens or b">" in tokens


def valid_queue_name(queue: bytes) -> bool:
    """A queue group name: non-empty, no whitespace (nats-server accepts any other bytes)."""
    return bool(queue) and _no_whitespace(queue)
