"""Value encodings: msgpack arrays for records, a fixed binary header for messages.

Owns every value byte; nothing else encodes or decodes stored values. Changing an encoding is a
new ``keys.FORMAT_VERSION``.

Message values are ``u64 ts_ms | u32 headers_len | headers | payload`` rather than msgpack: the
hot replay path decodes them with one ``struct`` call, and a summary or a delete reads the
timestamp or the size without touching the payload.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import cast

import msgpack

from mq9cluster.store.records import Mailbox

_MESSAGE_HEAD = struct.Struct(">QI")
MESSAGE_HEAD_SIZE = _MESSAGE_HEAD.size
_TS = struct.Struct(">Q")


def encode_u64(value: int) -> bytes:
    """An unsigned integer as 8 bytes big-endian (meta values)."""
    return value.to_bytes(8, "big")


def decode_u64(raw: bytes) -> int:
    """Inverse of :func:`encode_u64`."""
    return int.from_bytes(raw, "big")


def encode_mailbox(mailbox: Mailbox) -> bytes:
    """A mailbox record without its address (the key holds it)."""
    fields = (mailbox.created_at, mailbox.ttl, mailbox.expires_at, mailbox.public, mailbox.desc,
              mailbox.next_msg_id, mailbox.msg_count, mailbox.msg_bytes)
    return cast(bytes, msgpack.packb(fields))


def decode_mailbox(address: str, raw: bytes) -> Mailbox:
    """Inverse of :func:`encode_mailbox`."""
    return Mailbox(address, *msgpack.unpackb(raw, use_list=False))


def encode_message(ts_ms: int, payload: bytes, headers: bytes | None) -> bytes:
    """A message value; ``headers`` None and empty are stored alike."""
    head = _MESSAGE_HEAD.pack(ts_ms, len(headers) if headers else 0)
    return b"".join((head, headers or b"", payload))


def decode_message(raw: bytes) -> tuple[int, bytes, bytes | None]:
    """(ts_ms, payload, headers) of a message value."""
    ts_ms, headers_len = _MESSAGE_HEAD.unpack_from(raw)
    body = MESSAGE_HEAD_SIZE + headers_len
    return ts_ms, raw[body:], raw[MESSAGE_HEAD_SIZE:body] if headers_len else None


def message_ts(raw: bytes) -> int:
    """The commit timestamp of a message value, without decoding the rest."""
    return cast(int, _TS.unpack_from(raw)[0])


def message_size(raw: bytes) -> int:
    """Payload plus headers bytes of a message value."""
    return len(raw) - MESSAGE_HEAD_SIZE


def encode_cursor(cursor: Mapping[int, int]) -> bytes:
    """A queue group's cursor: {priority: last msg_id given to the group at that priority}."""
    return cast(bytes, msgpack.packb(dict(cursor)))


def decode_cursor(raw: bytes) -> dict[int, int]:
    """Inverse of :func:`encode_cursor`."""
    return cast(dict[int, int], msgpack.unpackb(raw, strict_map_key=False))


def encode_dedup(raft_index: int, result: bytes) -> bytes:
    """A dedup entry: the Raft index that applied the proposal and the result it returned."""
    return cast(bytes, msgpack.packb((raft_index, result)))


def decode_dedup(raw: bytes) -> tuple[int, bytes]:
    """Inverse of :func:`encode_dedup`."""
    raft_index, result = msgpack.unpackb(raw, use_list=False)
    return raft_index, result


def encode_record(value: object) -> bytes:
    """A dialect-3 record (message meta, key reference, delayed message, pull group, in-flight
    entry): a plain msgpack value; its shape is documented with its key in docs/storage.md."""
    return cast(bytes, msgpack.packb(value, use_bin_type=True))


def decode_record(raw: bytes) -> object:
    """Inverse of :func:`encode_record`."""
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)
