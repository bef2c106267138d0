"""Mail addresses and priorities: validation, parsing, and private address generation."""

from __future__ import annotations

import base64
import re
import secrets

from mq9cluster.store import Priority

MAX_ADDRESS = 128
_ADDRESS = re.compile(r"[a-z0-9]+(\.[a-z0-9]+)*")

#: Subject suffix -> level. ``high`` is the SDK dialect's spelling of ``urgent``.
PRIORITY_WORDS: dict[str, int] = {
    "critical": Priority.CRITICAL,
    "urgent": Priority.URGENT,
    "high": Priority.URGENT,
    "normal": Priority.NORMAL,
    "low": Priority.LOW,
}
PRIORITY_NAMES: dict[int, str] = {
    Priority.CRITICAL: "critical", Priority.URGENT: "urgent", Priority.NORMAL: "normal", Priority.LOW: "low",
}
#: The SDK dialect knows three levels; critical and urgent both show as ``high`` there.
SDK_PRIORITY_NAMES: dict[int, str] = {
    Priority.CRITICAL: "high", Priority.URGENT: "high", Priority.NORMAL: "normal", Priority.LOW: "low",
}
SDK_LEVELS: dict[str, tuple[int, ...]] = {
    "high": (Priority.CRITICAL, Priority.URGENT), "normal": (Priority.NORMAL,), "low": (Priority.LOW,),
}


def address_problem(address: str) -> str | None:
    """Why ``address`` is not a valid mail address, or None if it is."""
    if not address:
        return "mail address must not be empty"
    if len(address) > MAX_ADDRESS:
        return f"mail address is longer than {MAX_ADDRESS} characters"
    if not _ADDRESS.fullmatch(address):
        return (f"invalid mail address {address!r}: use lowercase a-z, 0-9 and '.', "
                "no leading, trailing or double dots")
    last = address.rsplit(".", 1)[-1]
    if last in PRIORITY_WORDS:
        return f"invalid mail address {address!r}: it must not end in a priority word ('.{last}')"
    return None


def new_private_address() -> str:
    """A fresh unguessable address: 130 bits from the OS CSPRNG, 26 lowercase base32 characters."""
    return base64.b32encode(secrets.token_bytes(17)).decode().lower()[:26]
