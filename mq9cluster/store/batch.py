"""One atomic change of the store: the mutations of one applied Raft entry.

A :class:`Batch` queues typed mutations in a RocksDB WriteBatch and writes them, together with
``last_applied``, in one atomic write at :meth:`Batch.commit`. Its reads (``get_mailbox``,
``has_mailbox``, ``get_group_cursor``, ``get_dedup``) see committed state overlaid with the
batch's own earlier mutations, so an apply loop can run 500 appends (each taking the next
msg_id) or create-then-send in one batch. Reads on the Store do not see a batch until commit.

Deterministic: it takes no time and no id of its own; every value comes from its arguments or
from stored state. Must not know about Raft or NATS beyond the integer index it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import cast

from rocksdict import Rdict, WriteBatch

from mq9cluster.store import codecs, keys
from mq9cluster.errors import NoSuchMailbox, StoreError
from mq9cluster.store.records import Mailbox

_ALL_LEVELS = tuple(range(keys.MAX_PRIORITY + 1))

CommitFn = Callable[[WriteBatch, int, set[bytes]], None]


class _Live:
    """A mailbox as the batch sees it: the record plus the counters the batch moves."""

    __slots__ = ("mailbox", "msg_bytes", "msg_count", "next_msg_id", "tag")

    def __init__(self, mailbox: Mailbox, tag: bytes) -> None:
        self.mailbox = mailbox
        self.tag = tag
        self.next_msg_id = mailbox.next_msg_id
        self.msg_count = mailbox.msg_count
        self.msg_bytes = mailbox.msg_bytes

    def record(self) -> Mailbox:
        return replace(self.mailbox, next_msg_id=self.next_msg_id, msg_count=self.msg_count,
                       msg_bytes=self.msg_bytes)


class Batch:
    """Mutations of one Raft entry; get one from ``Store.batch(raft_index)``, then ``commit()``.

    One batch at a time per store, committed in Raft index order from one thread. A batch that
    is dropped without commit changes nothing.
    """

    def __init__(self, db: Rdict, raft_index: int, commit: CommitFn) -> None:
        self.raft_index = raft_index
        self._db = db
        self._commit = commit
        self._wb: WriteBatch | None = WriteBatch(raw_mode=True)
        self._mailboxes: dict[str, _Live | None] = {}
        self._dirty: set[str] = set()
        self._wiped: set[str] = set()
        self._retired: dict[str, int] = {}
        self._messages: dict[tuple[str, int], tuple[int, int] | None] = {}
        self._groups: dict[tuple[str, str], dict[int, int]] = {}
        self._dedup: dict[bytes, bytes] = {}
        self._key_refs: dict[tuple[str, str], tuple[int, int]] = {}
        self._pull: dict[tuple[str, str], dict] = {}
        self._inflight: dict[tuple[str, str, int], tuple[int, int] | None] = {}
        self._delayed_seq = 0
        self._raw_gone: set[bytes] = set()
        self._agents: dict[str, list | None] = {}
        #: How this batch changed the store's totals so far: [mailboxes, messages, bytes].
        self.delta = [0, 0, 0]

    # reads that see this batch's own mutations

    def get_mailbox(self, address: str) -> Mailbox | None:
        """The mailbox as of this batch, or None."""
        live = self._live(address)
        return None if live is None else live.record()

    def expires_at(self, address: str) -> int | None:
        """The mailbox's expires_at (0 = never) as of this batch, or None if it does not exist.

        Cheaper than ``get_mailbox`` (no record is built): the apply of every send calls it.
        """
        live = self._live(address)
        return None if live is None else live.mailbox.expires_at

    def has_mailbox(self, address: str) -> bool:
        """True if the mailbox exists as of this batch (cheaper than get_mailbox)."""
        return self._live(address) is not None

    def get_group_cursor(self, address: str, group: str) -> dict[int, int]:
        """{priority: last msg_id given to the group} as of this batch."""
        return dict(self._cursor(address, group))

    def get_dedup(self, proposal_id: bytes) -> bytes | None:
        """The result recorded for a proposal id as of this batch, or None."""
        if proposal_id in self._dedup:
            return self._dedup[proposal_id]
        raw = self._db.get(keys.dedup_key(proposal_id))
        return None if raw is None else codecs.decode_dedup(raw)[1]

    # mutations

    def put_mailbox(self, mailbox: Mailbox) -> Mailbox:
        """Create or replace a mailbox and keep its public and expiry index entries in step.

        The store owns ``next_msg_id``, ``msg_count`` and ``msg_bytes``: an existing mailbox
        keeps its own; a new one starts empty, with msg_ids after any a deleted public mailbox
        of the same address gave out. Returns the record as stored.
        """
        wb = self._writable()
        live = self._live(mailbox.address)
        if live is None:
            tag = keys.tagged(mailbox.address)
            floor = self._retired_floor(mailbox.address, tag)
            live = _Live(replace(mailbox, next_msg_id=floor, msg_count=0, msg_bytes=0), tag)
            old = None
            self.delta[0] += 1
        else:
            old = live.mailbox
            live.mailbox = mailbox
        tag = live.tag
        if old is not None and old.expires_at and old.expires_at != mailbox.expires_at:
            wb.delete(keys.expiry_key(old.expires_at, tag))
        if mailbox.expires_at and (old is None or old.expires_at != mailbox.expires_at):
            wb.put(keys.expiry_key(mailbox.expires_at, tag), b"")
        if old is not None and old.public and not mailbox.public:
            wb.delete(keys.public_key(tag))
        if mailbox.public and (old is None or not old.public):
            wb.put(keys.public_key(tag), b"")
        self._mailboxes[mailbox.address] = live
        self._dirty.add(mailbox.address)
        return live.record()

    def delete_mailbox(self, address: str) -> Mailbox | None:
        """Delete a mailbox with its messages, group cursors and index entries.

        A public mailbox that gave out msg_ids leaves its next msg_id behind (RETIRED key), so
        that re-creating the same name never reuses one. Returns the deleted record, or None if
        there was none.
        """
        wb = self._writable()
        live = self._live(address)
        if live is None:
            return None
        mailbox, tag = live.record(), live.tag
        self.delta[0] -= 1
        self.delta[1] -= mailbox.msg_count
        self.delta[2] -= mailbox.msg_bytes
        wb.delete(keys.mailbox_key(tag))
        messages = keys.messages_prefix(tag)
        wb.delete_range(messages, keys.end_of(messages))
        groups = keys.groups_prefix(tag)
        wb.delete_range(groups, keys.end_of(groups))
        for prefix in (keys.MSG_META, keys.MSG_KEY, keys.PULL_GROUP, keys.INFLIGHT):
            wb.delete_range(prefix + tag, keys.end_of(prefix + tag))
        if mailbox.expires_at:
            wb.delete(keys.expiry_key(mailbox.expires_at, tag))
        if mailbox.public:
            wb.delete(keys.public_key(tag))
        if mailbox.public and mailbox.next_msg_id > 1:
            wb.put(keys.retired_key(tag), codecs.encode_u64(mailbox.next_msg_id))
            self._retired[address] = mailbox.next_msg_id
        self._mailboxes[address] = None
        self._dirty.discard(address)
        self._wiped.add(address)
        self._messages = {k: v for k, v in self._messages.items() if k[0] != address}
        self._groups = {k: v for k, v in self._groups.items() if k[0] != address}
        self._key_refs = {k: v for k, v in self._key_refs.items() if k[0] != address}
        self._pull = {k: v for k, v in self._pull.items() if k[0] != address}
        self._inflight = {k: v for k, v in self._inflight.items() if k[0] != address}
        return mailbox

    def append_message(self, address: str, priority: int, ts_ms: int, payload: bytes,
                       headers: bytes | None = None) -> int:
        """Store a message under the mailbox's next msg_id and return that id."""
        wb = self._writable()
        live = self._existing(address)
        msg_id = live.next_msg_id
        wb.put(keys.message_key(live.tag, priority, msg_id),
               codecs.encode_message(ts_ms, payload, headers))
        size = len(payload) + (len(headers) if headers else 0)
        live.next_msg_id = msg_id + 1
        live.msg_count += 1
        live.msg_bytes += size
        self.delta[1] += 1
        self.delta[2] += size
        self._messages[(address, msg_id)] = (priority, size)
        self._dirty.add(address)
        return msg_id

    def delete_message(self, address: str, msg_id: int, priority: int | None = None) -> bool:
        """Delete one message; without ``priority`` the levels are probed (one multi-get).

        Returns False if the mailbox or the message does not exist.
        """
        wb = self._writable()
        live = self._live(address)
        if live is None or not 0 < msg_id < live.next_msg_id:
            return False
        found = self._find_message(address, live.tag, msg_id, priority)
        if found is None:
            return False
        level, size = found
        wb.delete(keys.message_key(live.tag, level, msg_id))
        wb.delete(keys.msg_meta_key(live.tag, msg_id))
        live.msg_count -= 1
        live.msg_bytes -= size
        self.delta[1] -= 1
        self.delta[2] -= size
        self._messages[(address, msg_id)] = None
        self._dirty.add(address)
        return True

    def advance_group_cursor(self, address: str, group: str, cursor: Mapping[int, int]) -> None:
        """Move a queue group's per-priority cursor forward; a level never moves back."""
        wb = self._writable()
        live = self._existing(address)
        merged = dict(self._cursor(address, group))
        for priority, msg_id in cursor.items():
            keys.rank(priority)  # validates the level
            if msg_id > merged.get(priority, 0):
                merged[priority] = msg_id
        self._groups[(address, group)] = merged
        wb.put(keys.group_key(live.tag, group), codecs.encode_cursor(merged))

    # dialect 3: message options, delayed messages, pull groups

    def put_message_meta(self, address: str, priority: int, msg_id: int, key: str,
                         tags: list[str], expires_at: int) -> None:
        """Record a message's key, tags and expiry (0 = never); the key now names this message."""
        wb = self._writable()
        tag = self._existing(address).tag
        wb.put(keys.msg_meta_key(tag, msg_id), codecs.encode_record([key, tags, expires_at]))
        if key:
            wb.put(keys.msg_key_key(tag, key), codecs.encode_record([priority, msg_id]))
            self._key_refs[(address, key)] = (priority, msg_id)
        if expires_at:
            wb.put(keys.msg_expiry_key(expires_at, tag, msg_id), b"")

    def key_holder(self, address: str, key: str) -> tuple[int, int] | None:
        """(priority, msg_id) of the last message sent to ``address`` with ``key`` (it may be gone)."""
        if (address, key) in self._key_refs:
            return self._key_refs[(address, key)]
        if address in self._wiped:
            return None
        raw = self._db.get(keys.msg_key_key(keys.tagged(address), key))
        return None if raw is None else cast(tuple[int, int], tuple(codecs.decode_record(raw)))

    def message_size(self, address: str, msg_id: int, priority: int | None = None) -> int:
        """Bytes (payload and headers) of a stored message as of this batch; 0 if there is none."""
        live = self._live(address)
        found = None if live is None else self._find_message(address, live.tag, msg_id, priority)
        return 0 if found is None else found[1]

    def message_gone(self, address: str, msg_id: int) -> bool:
        """True if this batch deleted the message (committed reads still show it)."""
        return address in self._wiped or ((address, msg_id) in self._messages
                                          and self._messages[(address, msg_id)] is None)

    def put_delayed(self, due_ms: int, address: str, record: list) -> None:
        """Hold a message until ``due_ms``; ``record`` is what the release appends."""
        self._delayed_seq += 1
        self._writable().put(keys.delayed_key(due_ms, self.raft_index, self._delayed_seq, keys.tagged(address)),
                             codecs.encode_record(record))

    def delete_raw(self, key: bytes) -> bool:
        """Remove an index or delayed entry found by a committed-state scan; False if this batch
        already removed it (two ticks in one entry scan the same committed state)."""
        if key in self._raw_gone:
            return False
        self._raw_gone.add(key)
        self._writable().delete(key)
        return True

    def get_pull_group(self, address: str, group: str) -> dict | None:
        """A pull group's state ({"cursor", "from_ts", "ack_wait"}) as of this batch, or None."""
        if (address, group) in self._pull:
            return self._pull[(address, group)]
        if address in self._wiped:
            return None
        raw = self._db.get(keys.pull_group_key(keys.tagged(address), group))
        return None if raw is None else cast(dict, codecs.decode_record(raw))

    def put_pull_group(self, address: str, group: str, state: dict) -> None:
        """Store a pull group's state."""
        tag = self._existing(address).tag
        self._pull[(address, group)] = state
        self._writable().put(keys.pull_group_key(tag, group), codecs.encode_record(state))

    def inflight_overlay(self, address: str, group: str, msg_id: int) -> tuple[int, int] | None | bool:
        """This batch's own in-flight entry for a message: (priority, deadline), None if removed,
        False if this batch did not touch it."""
        return self._inflight.get((address, group, msg_id), False)

    def touched_inflight(self, address: str, group: str) -> dict[int, tuple[int, int] | None]:
        """{msg_id: entry or None} this batch wrote for one group."""
        return {k[2]: v for k, v in self._inflight.items() if k[0] == address and k[1] == group}

    def put_inflight(self, address: str, group: str, msg_id: int, priority: int, deadline: int) -> None:
        """The group was handed ``msg_id``; it is offered again after ``deadline`` unless acked."""
        tag = self._existing(address).tag
        self._inflight[(address, group, msg_id)] = (priority, deadline)
        self._writable().put(keys.inflight_key(tag, group, msg_id), codecs.encode_record([priority, deadline]))

    def drop_inflight(self, address: str, group: str, msg_id: int) -> None:
        """The group acknowledged ``msg_id`` (or it is gone)."""
        tag = self._existing(address).tag
        self._inflight[(address, group, msg_id)] = None
        self._writable().delete(keys.inflight_key(tag, group, msg_id))

    # the agent registry

    def get_agent(self, mailbox: str) -> list | None:
        """An agent's registry record as of this batch, or None."""
        if mailbox in self._agents:
            return self._agents[mailbox]
        raw = self._db.get(keys.agent_key(keys.tagged(mailbox)))
        return None if raw is None else cast(list, codecs.decode_record(raw))

    def put_agent(self, mailbox: str, record: list) -> None:
        """Register or update an agent card."""
        self._agents[mailbox] = record
        self._writable().put(keys.agent_key(keys.tagged(mailbox)), codecs.encode_record(record))

    def delete_agent(self, mailbox: str) -> None:
        """Remove an agent card."""
        self._agents[mailbox] = None
        self._writable().delete(keys.agent_key(keys.tagged(mailbox)))

    def put_clock(self, record: list) -> None:
        """Replace the cluster clock's record (see mailbox/clock.py)."""
        self._writable().put(keys.CLOCK_KEY, codecs.encode_record(record))

    def put_dedup(self, proposal_id: bytes, result: bytes) -> None:
        """Record the result of a proposal, at this batch's Raft index (see Store dedup_window)."""
        wb = self._writable()
        raw = None if proposal_id in self._dedup else self._db.get(keys.dedup_key(proposal_id))
        if raw is not None:
            wb.delete(keys.dedup_order_key(codecs.decode_dedup(raw)[0], proposal_id))
        wb.put(keys.dedup_key(proposal_id), codecs.encode_dedup(self.raft_index, result))
        wb.put(keys.dedup_order_key(self.raft_index, proposal_id), b"")
        self._dedup[proposal_id] = result

    def commit(self) -> None:
        """Write every mutation and ``last_applied = raft_index`` in one atomic write."""
        wb = self._writable()
        for address in self._dirty:
            live = self._mailboxes[address]
            assert live is not None
            wb.put(keys.mailbox_key(live.tag), codecs.encode_mailbox(live.record()))
        self._wb = None
        self._commit(wb, self.raft_index, set(self._dedup))

    # internals

    def _writable(self) -> WriteBatch:
        if self._wb is None:
            raise StoreError(f"batch for raft index {self.raft_index} is already committed")
        return self._wb

    def _live(self, address: str) -> _Live | None:
        if address in self._mailboxes:
            return self._mailboxes[address]
        tag = keys.tagged(address)
        raw = self._db.get(keys.mailbox_key(tag))
        live = None if raw is None else _Live(codecs.decode_mailbox(address, raw), tag)
        self._mailboxes[address] = live
        return live

    def _existing(self, address: str) -> _Live:
        live = self._live(address)
        if live is None:
            raise NoSuchMailbox(f"mailbox {address} does not exist")
        return live

    def _retired_floor(self, address: str, tag: bytes) -> int:
        """First msg_id for a new mailbox at ``address``; consumes its RETIRED key."""
        floor = self._retired.pop(address, None)
        if floor is None:
            raw = self._db.get(keys.retired_key(tag))
            floor = 1 if raw is None else codecs.decode_u64(raw)
        if floor > 1:
            self._writable().delete(keys.retired_key(tag))
        return floor

    def _find_message(self, address: str, tag: bytes, msg_id: int,
                      priority: int | None) -> tuple[int, int] | None:
        """(priority, size) of a stored message as of this batch, or None."""
        if (address, msg_id) in self._messages:
            found = self._messages[(address, msg_id)]
            return None if found is None or priority not in (None, found[0]) else found
        if address in self._wiped:
            return None
        levels = _ALL_LEVELS if priority is None else (priority,)
        raws = cast(list[bytes | None],
                    self._db.get([keys.message_key(tag, level, msg_id) for level in levels]))
        for level, raw in zip(levels, raws, strict=True):
            if raw is not None:
                return level, codecs.message_size(raw)
        return None

    def _cursor(self, address: str, group: str) -> dict[int, int]:
        if (address, group) in self._groups:
            return self._groups[(address, group)]
        if address in self._wiped:
            return {}
        raw = self._db.get(keys.group_key(keys.tagged(address), group))
        return {} if raw is None else codecs.decode_cursor(raw)
