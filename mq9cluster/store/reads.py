"""Typed read views over committed state.

Every read here sees committed batches only. A scan runs on one RocksDB iterator, which is a
point-in-time view: later commits do not show up in a scan already started, and a
:class:`MessageScan` reports the ``last_applied`` of exactly the state it reads, so a caller can
hand over from replay to live delivery at that Raft index with no gap and no duplicate.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import cast

from rocksdict import Rdict, RdictIter, ReadOptions

from mq9cluster.store import codecs, keys
from mq9cluster.store.records import Expiry, Mailbox, Message, MessageSummary

_LEVELS_DESC = tuple(range(keys.MAX_PRIORITY, -1, -1))


class _BoundedIter:
    """A raw RocksDB iterator that stops before ``upper``.

    rocksdict's iterator points into the bound bytes held by its ReadOptions without owning
    them: the options must outlive the iterator, so the two are kept together here.
    """

    __slots__ = ("_options", "it")

    def __init__(self, db: Rdict, upper: bytes) -> None:
        self._options = ReadOptions()
        self._options.set_iterate_upper_bound(upper)
        self.it: RdictIter = db.iter(self._options)


def scan_keys(db: Rdict, start: bytes, end: bytes) -> Iterator[bytes]:
    """Keys in [start, end), in order."""
    bounded = _BoundedIter(db, end)
    it = bounded.it
    it.seek(start)
    while it.valid():
        yield it.key()
        it.next()
    it.status()  # raises if the scan stopped on an I/O error rather than at its end


def _ranges(tag: bytes, priorities: Collection[int] | None,
            after: Mapping[int, int] | None) -> list[tuple[bytes, bytes]]:
    """Key ranges [start, end) of one mailbox's messages, in replay order."""
    if priorities is None and not after:
        prefix = keys.messages_prefix(tag)
        return [(prefix, keys.end_of(prefix))]
    levels = _LEVELS_DESC if priorities is None else sorted(set(priorities), reverse=True)
    cursor = after or {}
    ranges = []
    for priority in levels:
        prefix = keys.level_prefix(tag, priority)
        ranges.append((prefix + keys.u64(cursor.get(priority, 0) + 1), keys.end_of(prefix)))
    return ranges


def _walk(bounded: _BoundedIter,
          ranges: list[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of ``ranges``, in order, from one iterator."""
    it = bounded.it
    for start, end in ranges:
        it.seek(start)
        while it.valid():
            key = it.key()
            if key >= end:
                break
            yield key, it.value()
            it.next()
        it.status()  # raises if the scan stopped on an I/O error rather than at its end


def _open_scan(db: Rdict, tag: bytes) -> tuple[_BoundedIter, int]:
    """An iterator over one mailbox's messages and the last_applied of the same view."""
    bounded = _BoundedIter(db, keys.end_of(keys.messages_prefix(tag)))
    return bounded, _u64_at(bounded.it, keys.LAST_APPLIED_KEY)


def _u64_at(it: RdictIter, key: bytes) -> int:
    it.seek(key)
    return codecs.decode_u64(it.value()) if it.valid() and it.key() == key else 0


def _next_msg_id_at(it: RdictIter, address: str, tag: bytes) -> int:
    """The mailbox's next msg_id in the iterator's view (1 if it has no record there)."""
    key = keys.mailbox_key(tag)
    it.seek(key)
    if it.valid() and it.key() == key:
        return codecs.decode_mailbox(address, it.value()).next_msg_id
    return 1


class MessageScan:
    """Messages of one mailbox in replay order: priority high to low, msg_id ascending.

    The view is fixed when the scan is created; ``last_applied`` is the Raft index of that view
    and ``next_msg_id`` the mailbox's next id in it: every message with a lower id had been
    stored by then (and is in the view unless it was deleted). Iterate it once.
    """

    __slots__ = ("_messages", "last_applied", "next_msg_id")

    def __init__(self, db: Rdict, address: str, priorities: Collection[int] | None,
                 after: Mapping[int, int] | None) -> None:
        tag = keys.tagged(address)
        bounded, self.last_applied = _open_scan(db, tag)
        self.next_msg_id = _next_msg_id_at(bounded.it, address, tag)
        self._messages = self._decode(address, _walk(bounded, _ranges(tag, priorities, after)))

    @staticmethod
    def _decode(address: str, pairs: Iterator[tuple[bytes, bytes]]) -> Iterator[Message]:
        decode_message, parse_key = codecs.decode_message, keys.parse_message_key
        for key, value in pairs:
            priority, msg_id = parse_key(key)
            ts_ms, payload, headers = decode_message(value)
            yield Message(address, priority, msg_id, ts_ms, payload, headers)

    def __iter__(self) -> Iterator[Message]:
        return self._messages


class StoreReads:
    """Read views of committed state; :class:`~mq9cluster.store.store.Store` inherits them.

    Each read holds the store's RocksDB handle through ``_reading()`` for its duration only, so
    the handle can be swapped (a snapshot install) between two reads from another thread.
    """

    def _reading(self) -> AbstractContextManager[Rdict]:
        raise NotImplementedError

    def last_applied(self) -> int:
        """The Raft index of the last committed batch (0 for a new store)."""
        raise NotImplementedError

    def get_mailbox(self, address: str) -> Mailbox | None:
        """The mailbox record, or None if it does not exist."""
        with self._reading() as db:
            raw = db.get(keys.mailbox_key(keys.tagged(address)))
        return None if raw is None else codecs.decode_mailbox(address, raw)

    def iter_messages(self, address: str, priorities: Collection[int] | None = None,
                      after: Mapping[int, int] | None = None) -> MessageScan:
        """Stored messages in replay order, optionally only some priorities and only those after
        a per-priority cursor {priority: last msg_id seen}; empty for an unknown mailbox."""
        with self._reading() as db:
            return MessageScan(db, address, priorities, after)

    def get_messages(self, address: str, ids: Iterable[Sequence[int]]) -> list[Message]:
        """The stored messages among ``ids`` ((priority, msg_id) pairs), in that order; absent ones are left out."""
        tag = keys.tagged(address)
        wanted = [(priority, msg_id) for priority, msg_id in ids]
        if not wanted:
            return []
        with self._reading() as db:
            raws = cast(list[bytes | None], db.get([keys.message_key(tag, p, i) for p, i in wanted]))
        found = []
        for (priority, msg_id), raw in zip(wanted, raws, strict=True):
            if raw is not None:
                ts_ms, payload, headers = codecs.decode_message(raw)
                found.append(Message(address, priority, msg_id, ts_ms, payload, headers))
        return found

    def list_message_summaries(self, address: str) -> list[MessageSummary]:
        """(msg_id, priority, ts_ms) of every stored message, in replay order."""
        tag = keys.tagged(address)
        summaries = []
        with self._reading() as db:
            bounded, _ = _open_scan(db, tag)
            for key, value in _walk(bounded, _ranges(tag, None, None)):
                priority, msg_id = keys.parse_message_key(key)
                summaries.append(MessageSummary(msg_id, priority, codecs.message_ts(value)))
        return summaries

    def public_mailboxes(self) -> list[Mailbox]:
        """Every public mailbox, in address order."""
        with self._reading() as db:
            tags = [key[1:] for key in scan_keys(db, keys.PUBLIC, keys.end_of(keys.PUBLIC))]
            if not tags:
                return []
            raws = cast(list[bytes | None], db.get([keys.mailbox_key(tag) for tag in tags]))
        return [codecs.decode_mailbox(keys.address_of(tag), raw)
                for tag, raw in zip(tags, raws, strict=True) if raw is not None]

    def stored_totals(self) -> tuple[int, int, int]:
        """(mailboxes, messages, bytes) held now, summed over the mailbox records (one per mailbox,
        messages not read)."""
        mailboxes = messages = size = 0
        with self._reading() as db:
            bounded = _BoundedIter(db, keys.end_of(keys.MAILBOX))
            it = bounded.it
            it.seek(keys.MAILBOX)
            while it.valid():
                record = codecs.decode_mailbox(keys.address_of(it.key()[1:]), it.value())
                mailboxes += 1
                messages += record.msg_count
                size += record.msg_bytes
                it.next()
            it.status()
        return mailboxes, messages, size

    def due_expiries(self, now_ms: int, limit: int | None = None) -> list[Expiry]:
        """Mailboxes whose expires_at <= now_ms, soonest first, at most ``limit`` of them."""
        due: list[Expiry] = []
        with self._reading() as db:
            for key in scan_keys(db, keys.EXPIRY, keys.expiry_bound(now_ms)):
                if limit is not None and len(due) >= limit:
                    break
                due.append(Expiry(*keys.parse_expiry_key(key)))
        return due

    def get_clock(self) -> list | None:
        """The cluster clock's record (see mailbox/clock.py), or None before the first report."""
        with self._reading() as db:
            raw = db.get(keys.CLOCK_KEY)
        return None if raw is None else cast(list, codecs.decode_record(raw))

    def get_group_cursor(self, address: str, group: str) -> dict[int, int]:
        """{priority: last msg_id given to the group}; empty for a group never given anything."""
        with self._reading() as db:
            raw = db.get(keys.group_key(keys.tagged(address), group))
        return {} if raw is None else codecs.decode_cursor(raw)

    def get_dedup(self, proposal_id: bytes) -> bytes | None:
        """The result recorded for a proposal id, or None if unknown or pruned."""
        with self._reading() as db:
            raw = db.get(keys.dedup_key(proposal_id))
        return None if raw is None else codecs.decode_dedup(raw)[1]

    # dialect 3

    def get_message_meta(self, address: str, msg_ids: Sequence[int]) -> dict[int, tuple[str, list[str], int]]:
        """{msg_id: (key, tags, expires_at)} of those among ``msg_ids`` sent with options."""
        if not msg_ids:
            return {}
        tag = keys.tagged(address)
        with self._reading() as db:
            raws = cast(list[bytes | None], db.get([keys.msg_meta_key(tag, i) for i in msg_ids]))
        return {i: cast(tuple[str, list[str], int], tuple(codecs.decode_record(raw)))
                for i, raw in zip(msg_ids, raws, strict=True) if raw is not None}

    def key_holder(self, address: str, key: str) -> tuple[int, int] | None:
        """(priority, msg_id) of the last message sent with ``key`` (it may have been deleted)."""
        with self._reading() as db:
            raw = db.get(keys.msg_key_key(keys.tagged(address), key))
        return None if raw is None else cast(tuple[int, int], tuple(codecs.decode_record(raw)))

    def inflight(self, address: str, group: str) -> list[tuple[int, int, int]]:
        """(msg_id, priority, deadline) of what a pull group holds unacknowledged, by msg_id."""
        prefix = keys.inflight_prefix(keys.tagged(address), group)
        found = []
        with self._reading() as db:
            bounded = _BoundedIter(db, keys.end_of(prefix))
            for key, value in _walk(bounded, [(prefix, keys.end_of(prefix))]):
                priority, deadline = cast(list[int], codecs.decode_record(value))
                found.append((int.from_bytes(key[-8:], "big"), priority, deadline))
        return found

    def due_delayed(self, now_ms: int, limit: int) -> list[tuple[bytes, str, list]]:
        """(key, address, record) of delayed messages due at ``now_ms``, soonest first."""
        due = []
        with self._reading() as db:
            bounded = _BoundedIter(db, keys.DELAYED + keys.u64(now_ms + 1))
            for key, value in _walk(bounded, [(keys.DELAYED, keys.DELAYED + keys.u64(now_ms + 1))]):
                due.append((key, keys.parse_delayed_key(key)[1], cast(list, codecs.decode_record(value))))
                if len(due) >= limit:
                    break
        return due

    def due_message_expiries(self, now_ms: int, limit: int) -> list[tuple[bytes, str, int]]:
        """(key, address, msg_id) of messages whose own TTL ended by ``now_ms``, soonest first."""
        due = []
        bound = keys.MSG_EXPIRY + keys.u64(now_ms + 1)
        with self._reading() as db:
            for key in scan_keys(db, keys.MSG_EXPIRY, bound):
                _, address, msg_id = keys.parse_msg_expiry_key(key)
                due.append((key, address, msg_id))
                if len(due) >= limit:
                    break
        return due

    def next_message_timer(self) -> int | None:
        """The earliest time (ms) a delayed message is due or a message TTL ends, or None."""
        soonest = None
        with self._reading() as db:
            for prefix in (keys.DELAYED, keys.MSG_EXPIRY):
                for key in scan_keys(db, prefix, keys.end_of(prefix)):
                    at = int.from_bytes(key[1:9], "big")
                    soonest = at if soonest is None else min(soonest, at)
                    break
        return soonest

    def agents(self) -> list[tuple[str, list]]:
        """(mailbox, record) of every registered agent, in mailbox order."""
        found = []
        with self._reading() as db:
            bounded = _BoundedIter(db, keys.end_of(keys.AGENT))
            for key, value in _walk(bounded, [(keys.AGENT, keys.end_of(keys.AGENT))]):
                found.append((keys.address_of(key[1:]), cast(list, codecs.decode_record(value))))
        return found

    def key_counts(self) -> dict[str, int]:
        """Number of keys per prefix name: a full scan, for tests and diagnostics only."""
        counts: dict[str, int] = {}
        with self._reading() as db:
            for key in db.keys():  # noqa: SIM118 (an Rdict is not a dict)
                name = keys.PREFIX_NAMES[cast(bytes, key)[:1]]
                counts[name] = counts.get(name, 0) + 1
        return counts
