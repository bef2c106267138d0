"""The RocksDB key layout: one-byte prefixes in the default column family, and the format version.

Owns every key byte; nothing else builds or parses keys. Must not import rocksdict, Raft or NATS.
docs/storage.md describes each key. Any change to a prefix or an encoding below is a new
FORMAT_VERSION: prefixes are append-only, never reused.

A mailbox address enters a key as its ASCII bytes followed by a 0x00 terminator (``tagged``
below). Address bytes are all > 0x00, so the tag of ``a`` is never a prefix of the tag of
``a.b`` or ``a0``, and tags sort in plain address order.
"""

from __future__ import annotations

import re

FORMAT_VERSION = 1

META = b"\x00"
MAILBOX = b"\x01"
RETIRED = b"\x02"
MESSAGE = b"\x03"
GROUP = b"\x04"
PUBLIC = b"\x05"
EXPIRY = b"\x06"
DEDUP = b"\x07"
DEDUP_ORDER = b"\x08"
# dialect 3 (pull consumption): appended to the layout without changing any key above
MSG_META = b"\x09"
MSG_KEY = b"\x0a"
DELAYED = b"\x0b"
PULL_GROUP = b"\x0c"
INFLIGHT = b"\x0d"
MSG_EXPIRY = b"\x0e"
AGENT = b"\x0f"

PREFIX_NAMES = {
    META: "meta", MAILBOX: "mailbox", RETIRED: "retired", MESSAGE: "message", GROUP: "group",
    PUBLIC: "public", EXPIRY: "expiry", DEDUP: "dedup", DEDUP_ORDER: "dedup_order",
    MSG_META: "msg_meta", MSG_KEY: "msg_key", DELAYED: "delayed", PULL_GROUP: "pull_group",
    INFLIGHT: "inflight", MSG_EXPIRY: "msg_expiry", AGENT: "agent",
}

FORMAT_KEY = META + b"format_version"
LAST_APPLIED_KEY = META + b"last_applied"
CLOCK_KEY = META + b"cluster_clock"

MAX_PRIORITY = 3
_ADDRESS = re.compile(r"[a-z0-9.]{1,128}")
_TERMINATOR = b"\x00"


def u64(value: int) -> bytes:
    """``value`` as 8 bytes big-endian, so that byte order is numeric order."""
    return value.to_bytes(8, "big")


def tagged(address: str) -> bytes:
    """The terminated key form of ``address``; ValueError if it is not 1-128 of ``a-z0-9.``."""
    if _ADDRESS.fullmatch(address) is None:
        raise ValueError(f"not a storable mailbox address: {address!r}")
    return address.encode("ascii") + _TERMINATOR


def address_of(tag: bytes) -> str:
    """Inverse of :func:`tagged`."""
    return tag[:-1].decode("ascii")


def end_of(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with ``prefix`` (an upper bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        raise ValueError("a prefix of only 0xff bytes has no upper bound")
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def rank(priority: int) -> bytes:
    """The level byte: 0xff - priority, so that higher priorities sort first."""
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be 0..{MAX_PRIORITY}, got {priority!r}")
    return bytes((0xFF - priority,))


def mailbox_key(tag: bytes) -> bytes:
    """MAILBOX tag -> mailbox record."""
    return MAILBOX + tag


def retired_key(tag: bytes) -> bytes:
    """RETIRED tag -> next msg_id of a deleted public mailbox, so a re-creation never reuses ids."""
    return RETIRED + tag


def messages_prefix(tag: bytes) -> bytes:
    """Prefix of every message of one mailbox."""
    return MESSAGE + tag


def level_prefix(tag: bytes, priority: int) -> bytes:
    """Prefix of the messages of one mailbox at one priority."""
    return MESSAGE + tag + rank(priority)


def message_key(tag: bytes, priority: int, msg_id: int) -> bytes:
    """MESSAGE tag rank(priority) u64(msg_id) -> message value."""
    return MESSAGE + tag + rank(priority) + u64(msg_id)


def parse_message_key(key: bytes) -> tuple[int, int]:
    """(priority, msg_id) of a message key."""
    return 0xFF - key[-9], int.from_bytes(key[-8:], "big")


def groups_prefix(tag: bytes) -> bytes:
    """Prefix of every queue-group cursor of one mailbox."""
    return GROUP + tag


def group_key(tag: bytes, group: str) -> bytes:
    """GROUP tag group-utf8 -> per-priority cursor."""
    if not group:
        raise ValueError("a queue group name must not be empty")
    return GROUP + tag + group.encode("utf-8")


def public_key(tag: bytes) -> bytes:
    """PUBLIC tag -> empty: the index of public mailboxes, in address order."""
    return PUBLIC + tag


def expiry_key(expires_at: int, tag: bytes) -> bytes:
    """EXPIRY u64(expires_at ms) tag -> empty: mailboxes in the order they expire."""
    return EXPIRY + u64(expires_at) + tag


def expiry_bound(now_ms: int) -> bytes:
    """Upper bound (exclusive) of the expiry keys due at ``now_ms`` (expires_at <= now_ms)."""
    return EXPIRY + u64(now_ms + 1)


def parse_expiry_key(key: bytes) -> tuple[int, str]:
    """(expires_at, address) of an expiry key."""
    return int.from_bytes(key[1:9], "big"), address_of(key[9:])


def dedup_key(proposal_id: bytes) -> bytes:
    """DEDUP proposal-id -> (raft index, result)."""
    if not proposal_id:
        raise ValueError("a proposal id must not be empty")
    return DEDUP + proposal_id


def dedup_order_key(raft_index: int, proposal_id: bytes) -> bytes:
    """DEDUP_ORDER u64(raft index) proposal-id -> empty: dedup entries oldest first, for pruning."""
    return DEDUP_ORDER + u64(raft_index) + proposal_id


def dedup_order_bound(raft_index: int) -> bytes:
    """Upper bound (exclusive) of the dedup order keys written at or before ``raft_index``."""
    return DEDUP_ORDER + u64(raft_index + 1)


def parse_dedup_order_key(key: bytes) -> tuple[int, bytes]:
    """(raft index, proposal id) of a dedup order key."""
    return int.from_bytes(key[1:9], "big"), key[9:]


# -- dialect 3 ---------------------------------------------------------------------------------

_GROUP_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def group_tag(group: str) -> bytes:
    """The terminated key form of a pull group name (1-128 of ``A-Za-z0-9_.-``)."""
    if _GROUP_NAME.fullmatch(group) is None:
        raise ValueError(f"not a storable group name: {group!r}")
    return group.encode("ascii") + _TERMINATOR


def msg_meta_key(tag: bytes, msg_id: int) -> bytes:
    """MSG_META tag u64(msg_id) -> [key, tags, expires_at]: only for messages that have any."""
    return MSG_META + tag + u64(msg_id)


def msg_key_key(tag: bytes, key: str) -> bytes:
    """MSG_KEY tag key-utf8 -> [priority, msg_id] of the latest message sent with that key."""
    return MSG_KEY + tag + key.encode("utf-8")


def delayed_key(due_ms: int, raft_index: int, seq: int, tag: bytes) -> bytes:
    """DELAYED u64(due) u64(raft index) u32(position) tag -> a message not yet visible."""
    return DELAYED + u64(due_ms) + u64(raft_index) + seq.to_bytes(4, "big") + tag


def parse_delayed_key(key: bytes) -> tuple[int, str]:
    """(due_ms, address) of a delayed key."""
    return int.from_bytes(key[1:9], "big"), address_of(key[21:])


def pull_group_key(tag: bytes, group: str) -> bytes:
    """PULL_GROUP tag group-tag -> a pull group's cursor and settings."""
    return PULL_GROUP + tag + group_tag(group)


def inflight_prefix(tag: bytes, group: str) -> bytes:
    """Prefix of the messages handed to a pull group and not acknowledged yet."""
    return INFLIGHT + tag + group_tag(group)


def inflight_key(tag: bytes, group: str, msg_id: int) -> bytes:
    """INFLIGHT tag group-tag u64(msg_id) -> [priority, deadline ms]."""
    return INFLIGHT + tag + group_tag(group) + u64(msg_id)


def msg_expiry_key(expires_at: int, tag: bytes, msg_id: int) -> bytes:
    """MSG_EXPIRY u64(expires_at) tag u64(msg_id) -> empty: messages in the order their TTL ends."""
    return MSG_EXPIRY + u64(expires_at) + tag + u64(msg_id)


def parse_msg_expiry_key(key: bytes) -> tuple[int, str, int]:
    """(expires_at, address, msg_id) of a message expiry key."""
    return int.from_bytes(key[1:9], "big"), address_of(key[9:-8]), int.from_bytes(key[-8:], "big")


def agent_key(tag: bytes) -> bytes:
    """AGENT tag(card mailbox) -> [card JSON, registered_at, updated_at, report JSON, reported_at]."""
    return AGENT + tag
