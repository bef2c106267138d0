"""The Raft adapter: one pysyncobj ``SyncObj`` with one replicated ``apply(bytes)``, driven fast.

Owns the replicated object, its tick thread, the entry envelope (first byte = opcode), proposals
and their outcomes, the read barrier, the snapshot file container and Raft status. It knows
nothing of mailboxes: the state machine is a callback ``apply_entry(index, entry)``. Besides
``journal.py`` this is the only module that imports pysyncobj.

Threads: pysyncobj runs on this module's tick thread; ``apply_entry``, ``last_applied`` and the
snapshot hooks are called there, in log order. Proposal outcomes reach asyncio through
``loop.call_soon_threadsafe``. ``read_barrier`` belongs to one event loop.

pysyncobj behaviour relied on (``pysyncobj/syncobj.py`` of 0.3.17):

- A tick (``_onTick``, L611) does, in order: leader commit computation (L653-686), applying
  committed entries (L688, ``__applyLogEntries`` L708), AppendEntries (L690-692), taking queued
  proposals into the log (L699, ``_checkCommandsToApply`` L503), then ``poll`` (L706). A proposal
  taken into the log of a one-node cluster therefore commits only in the *next* tick.
- With ``appendEntriesUseBatch=False`` a proposal writes to a pipe that wakes the poller (L498,
  L263) and the leader sends AppendEntries per new entry (L540) and after applying (L731).
- ``__raftLastApplied`` is incremented *after* the replicated method returns (L718-725), so the
  entry being applied has index ``raftLastApplied + 1``. An exception out of the method leaves it
  unincremented: the entry is applied again on the next tick, forever (hence: fatal, stop).
- After a restart ``__raftLastApplied`` is 1 (L177) and the commit index comes from the journal
  (L176): every committed entry is applied again from index 2 unless a snapshot was loaded, which
  sets it to the snapshot's index (L1497). Index 1 and each new leader's first entry are
  pysyncobj no-ops (L168, L1227) that never reach ``apply``, so ``apply_entry`` sees increasing,
  not contiguous, indexes.
- A proposal's callback fires on the tick thread right after its entry is applied locally
  (L719-723), with ``DISCARDED`` if another term's entry took its index; a follower forwards
  proposals to the leader (L554-566) and fails them with ``LEADER_CHANGED`` on a leader change
  (L1246). Callbacks run before L725: one that raises makes the entry apply again, so ours never
  raise.
- Method ids come from the sorted names of replicated methods (L226-255).
- With ``commandsWaitLeader=False`` a tick fails every queued proposal with ``MISSING_LEADER``
  while no leader is known (L505-507, L568-569), on the tick thread; such a proposal was never
  appended anywhere. A leader's own proposals wait in ``__commandsWaitingCommit`` (idx -> [(term,
  callback)], L530) until their index is applied; a leader that hears from no quorum for
  ``leaderFallbackTimeout`` becomes a follower with no leader and the same term (L676-683),
  leaving them there. A follower's forwarded proposals wait in ``__commandsWaitingReply`` (L560)
  until the leader answers or the leader changes (L1246); a forward to a leader it has no
  connection to is dropped (transport.py L568).
- A follower starts an election only while connected to some peer (L635): one whose peers are
  all gone keeps its dead leader as leader forever.
- Pipelined AppendEntries trip two pysyncobj flaws (L1079-1082, L991-1006): see ``_Transport``.
- Log compaction (``__tryLogCompaction`` L1421, every tick) first asks the serializer's state
  (serializer.py L28-32: our ``serializeChecker`` when given; SUCCESS or FAILED also clear its
  busy mark) and, while that is not NOT_SERIALIZING, starts nothing; on SUCCESS it drops the
  journal up to the snapshot's previous entry (L1425-1428). With a custom serializer
  ``serialize`` calls it on the tick thread with ``fullDumpFile + '.tmp'``, then renames that
  file over ``fullDumpFile``; an exception from either is swallowed and leaves the serializer
  busy (serializer.py L84-102). While busy, ``getTransmissionData`` sends no snapshot to a
  follower (serializer.py L117-119) and ``serialize`` does nothing (L62-64). ``_SnapshotJob``
  builds on exactly this: the serializer starts a thread and returns without creating the
  ``.tmp`` file; the thread captures the state and writes the file; the checker renames it
  into place.
- A follower receives a snapshot in chunks into ``fullDumpFile + '.1.tmp'`` (not fsynced),
  renames it over ``fullDumpFile`` and loads it at once with ``clearJournal=True``
  (serializer.py L176-202, syncobj.py L1022-1025; ``_CheckedSerializer`` fsyncs and verifies
  it before the rename, and reports a bad one as not complete); a leader sends the file the
  serializer's ``getTransmissionData`` reads, from its first chunk (syncobj.py L1309-1327,
  serializer.py L117-148); a restarted node loads ``fullDumpFile`` in
  its first tick with ``clearJournal=False`` (L624-627). Loading (``__loadDumpFile`` L1472)
  calls the deserializer, whose result prefixed with ``None`` replaces pysyncobj's pickled
  object state; clears the journal and puts the snapshot's last two entries in it unless the
  journal starts with exactly those two (L1489-1495); sets ``raftLastApplied`` to the
  snapshot's index (L1497). A failing deserializer is only logged (L1510-1511).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import functools
import itertools
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Protocol

import msgpack
import pysyncobj.pickle as pysyncobj_pickle
from pysyncobj import FAIL_REASON, SERIALIZER_STATE, SyncObj, SyncObjConf, SyncObjException, replicated
from pysyncobj.node import Node, TCPNode
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.serializer import Serializer
from pysyncobj.transport import TCPTransport

from mq9cluster.cluster.journal import _fsync_dir, install_durable_journal
from mq9cluster.errors import NodeStopped, NoQuorum, NotLeader, ProposalFailed, SnapshotCorrupt

logger = logging.getLogger(__name__)


class Op(enum.IntEnum):
    """Entry opcodes: the first byte of every entry this module proposes.

    APPEND-ONLY. Never renumber, reuse or remove a value: the Raft log (and every snapshot's
    journal tail) of a running cluster holds entries of every opcode ever written. A new kind of
    entry gets the next free number; a changed payload gets a new opcode or a version inside it.
    """

    NOOP = 0x00  # read barrier; handled here, never passed to apply_entry
    BATCH = 0x01  # groupcommit: msgpack list of opaque operations (written by 0.1 only)
    BATCH_ID = 0x02  # groupcommit: 16-byte proposal id, then a msgpack list of operations


NOOP_ENTRY = bytes([Op.NOOP])
MAX_ENTRY_BYTES = 1 << 20
# Larger than any entry, so pysyncobj never takes its chunked path for one entry (syncobj.py
# L1275-1296), whose end-of-transfer test compares against the unpickled size.
_APPEND_ENTRIES_BATCH_BYTES = 4 << 20
_DISABLED = 1 << 62  # "never" for pysyncobj's compaction thresholds
# pysyncobj pickles every command it logs and every message it sends with protocol 2
# (pysyncobj/pickle.py ``__protocol``), which stores bytes as a latin-1 str encoded as UTF-8:
# for a 35 KB batch of binary payloads 95 us to pickle on the loop, 39 us to unpickle at apply
# and 1.5x the bytes to write and fdatasync. Protocol 4: 0.6 us, 0.4 us, 1x. Unpickling reads
# any protocol, so journals, snapshots and peers written with either stay readable both ways.
PICKLE_PROTOCOL = 4
setattr(pysyncobj_pickle, "__protocol", PICKLE_PROTOCOL)
_EXPIRY_SCAN_INTERVAL = 0.01
_BARRIER_RETRY_PAUSE = 0.01
_NO_QUORUM = -1  # our own outcome code next to pysyncobj's FAIL_REASON values
# pysyncobj's (serializer.py L85, L176), ours (_SnapshotJob) and older releases' (.state).
_SNAPSHOT_TEMPORARIES = (".tmp", ".1.tmp", ".writing", ".tmp.state", ".state")
_REJECTED = ".rejected"  # the last received snapshot that failed verification, kept for forensics
_REWRITE_RETRY = 5.0  # seconds between attempts to rewrite a damaged own snapshot

ApplyEntry = Callable[[int, bytes], Any]
Done = Callable[[Any, "BaseException | None"], None]


class StateSnapshot(Protocol):
    """The state machine's state captured at one moment, to be written out."""

    index: int  # the state machine's last_applied in this state

    def write_to(self, out: BinaryIO) -> None:
        """Write the state to ``out``."""

    def discard(self) -> None:
        """Release what the capture holds (called once, after ``write_to`` or instead of it)."""


# Called on the snapshot thread while entries are applied: capture a consistent state that holds
# at least every entry applied before the call (it may hold later ones: its ``index`` says).
SnapshotWriter = Callable[[], StateSnapshot]
SnapshotReader = Callable[[BinaryIO], None]  # tick thread: replace the state by a verified stream


@dataclass(frozen=True)
class RaftTuning:
    """Timings for LAN/loopback clusters and snapshot thresholds; see docs/durability.md."""

    heartbeat: float = 0.05  # appendEntriesPeriod
    election_timeout_min: float = 0.3  # > 3 heartbeats (pysyncobj asserts it)
    election_timeout_max: float = 0.6
    leader_fallback: float = 1.0  # a leader without a quorum's answers steps down after this
    leader_wait: float = 1.0  # a proposal waits this long for a leader; a node leaderless this long refuses
    connection_timeout: float = 2.0
    reconnect_interval: float = 0.1  # < election_timeout_min: a restarted peer hears the leader first
    propose_timeout: float = 5.0
    snapshot_min_entries: int = 50_000
    snapshot_min_interval: float = 600.0
    # Seconds a peer's resolved address is reused (pysyncobj's default is 600). A Kubernetes pod
    # comes back with a new IP under the same DNS name; only the peer with the larger address
    # dials, so a stale answer would keep the restarted member cut off for that long.
    dns_cache_time: float = 2.0
    dns_fail_cache_time: float = 1.0  # a failed lookup (a new pod's record not published yet)


@dataclass(frozen=True)
class RaftStatus:
    """One node's view of the cluster, for monitoring."""

    address: str
    role: str  # "leader", "candidate", "follower" or "stopped"
    term: int
    leader: str | None
    commit_index: int
    last_applied: int
    log_entries: int
    has_quorum: bool
    peers: dict[str, bool]  # address -> connected
    match_index: dict[str, int]  # leader only: address -> highest index known stored there
    leader_commit_index: int | None = None  # the leader's commit index, as last heard from it
    snapshots_written: int = 0  # since start: snapshot files this node wrote (log compactions)
    snapshots_installed: int = 0  # since start: snapshots that replaced this node's state

    @classmethod
    def from_pysyncobj(cls, address: str, raw: dict[str, Any]) -> RaftStatus:
        """From pysyncobj's ``getStatus()`` dict (also what its ``status`` utility command returns)."""
        peers = _suffixed(raw, "partner_node_status_server_")
        return cls(
            address=address,
            role=_ROLES[raw["state"]],
            term=raw["raft_term"],
            leader=None if raw["leader"] is None else raw["leader"].id,
            commit_index=raw["commit_idx"],
            last_applied=raw["last_applied"],
            log_entries=raw["log_len"],
            has_quorum=raw["has_quorum"],
            peers={peer: state == 2 for peer, state in peers.items()},
            match_index=_suffixed(raw, "match_idx_server_") if raw["state"] == 2 else {},
            leader_commit_index=raw.get("leader_commit_idx"),
        )

    @property
    def members(self) -> list[str]:
        """Every member's Raft address as this node knows the cluster, itself included."""
        return sorted({self.address, *self.peers})

    def not_ready_reason(self) -> str | None:
        """Why this node is not a caught-up member yet, or None when it is.

        Caught up: it knows a leader (a node the cluster has not added yet hears from none) and
        has applied everything committed that it knows of, its own commit index and the leader's.
        """
        if self.role == "stopped":
            return "raft stopped"
        if self.leader is None:
            return "no leader known (election running, no quorum, or not a member yet)"
        target = max(self.commit_index, self.leader_commit_index or 0)
        if self.last_applied < target:
            return f"catching up: applied {self.last_applied} of {target}"
        return None


_ROLES = {0: "follower", 1: "candidate", 2: "leader"}


class _Waiters:
    """Outcome callbacks of proposals in flight, with their deadlines; safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, tuple[float, Done]] = {}
        self._ids = itertools.count()

    def add(self, done: Done, timeout: float) -> int:
        token = next(self._ids)
        with self._lock:
            self._items[token] = (time.monotonic() + timeout, done)
        return token

    def pop(self, token: int) -> Done | None:
        with self._lock:
            item = self._items.pop(token, None)
        return None if item is None else item[1]

    def expired(self, now: float) -> list[Done]:
        """Remove and return the callbacks whose deadline passed."""
        with self._lock:
            late = [token for token, (deadline, _) in self._items.items() if deadline <= now]
            return [self._items.pop(token)[1] for token in late]

    def alive(self, token: int) -> bool:
        with self._lock:
            return token in self._items

    def drain(self) -> list[Done]:
        with self._lock:
            items, self._items = self._items, {}
        return [done for _, done in items.values()]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class _Transport(TCPTransport):
    """pysyncobj's TCP transport, with AppendEntries made safe to pipeline.

    With AppendEntries sent per entry (``appendEntriesUseBatch=False``) several are in flight to a
    follower, and pysyncobj mishandles that twice:

    - the leader sets ``nextIndex`` to the follower's reply on every success (syncobj.py
      L1079-1082), so a reply to an older AppendEntries moves it back and entries already sent go
      out again: each resend costs the follower an fsync per entry. Here the leader keeps
      ``nextIndex`` where it was (a follower that really lacks entries answers ``reset``, which
      pysyncobj still honours, L1077);
    - a follower truncates its log after ``prevLogIdx`` whenever it is longer, without comparing
      terms (L991-1006): a resend (after a ``reset`` several can be in flight) deletes entries it
      acknowledged, even applied ones, from its disk until they are appended again. Here the
      follower first drops the entries it provably holds: if its last entry has the leader's
      term, it came from this leader, so by Log Matching its whole log is a prefix of the leader's.

    Both read pysyncobj's private state; besides two methods of ``_ReplicatedLog`` for snapshot
    loading, this class is the only place that does.
    """

    def _onMessageReceived(self, node: Node, message: Any) -> None:
        self._syncObj.messages_received += 1
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries" and "prevLogIdx" in message and "transmission" not in message:
            message = self._without_held_entries(message)
        elif kind == "next_node_idx" and message["success"] and not message["reset"]:
            next_index: dict[Node, int] = self._syncObj._SyncObj__raftNextIndex
            before = next_index.get(node)
            super()._onMessageReceived(node, message)
            if before is not None and next_index.get(node, before) < before:
                next_index[node] = before
            return
        super()._onMessageReceived(node, message)

    def _without_held_entries(self, message: dict[str, Any]) -> dict[str, Any]:
        _, last, term = self._syncObj._SyncObj__raftLog[-1]
        if message["prevLogIdx"] >= last or term != message["term"]:
            return message  # nothing held past prevLogIdx, or a conflict pysyncobj must resolve
        entries = [entry for entry in message.get("entries", ()) if entry[1] > last]
        return {**message, "prevLogIdx": last, "prevLogTerm": term, "entries": entries}


class _CheckedSerializer(Serializer):
    """pysyncobj's snapshot file serializer, with both ends of a snapshot transfer checked.

    - Sending (leader, tick thread): a transfer to a follower begins only if ``sendable()`` says
      the file in place is intact. Otherwise ``getTransmissionData`` gives None, which pysyncobj
      sends as "nothing this time" (the follower ignores it) and tries again at the next
      heartbeat (syncobj.py L1309-1327).
    - Receiving (follower): pysyncobj's own ``setTransmissionData`` renames the received file
      over the snapshot unverified and never fsyncs it (serializer.py L168-202); a bad one then
      stops the node, and at every restart again. Here the chunks go to the same ``.1.tmp``
      file, which is fsynced and verified (both checksums) when complete, and only a verified
      file is put in place and reported complete (pysyncobj then loads it). A bad one is kept as
      ``snapshot.rejected`` (the last one only) and never reported: the follower's log stays
      behind the leader's, so the leader sends the snapshot again.
    """

    def __init__(self, conf: SyncObjConf, sendable: Callable[[], bool], address: str = "") -> None:
        super().__init__(conf.fullDumpFile, conf.logCompactionBatchSize, False, conf.serializer,
                         conf.deserializer, conf.serializeChecker)
        self._sendable = sendable
        self._address = address  # for the log
        self._final: str = conf.fullDumpFile
        self._incoming: BinaryIO | None = None

    def getTransmissionData(self, transmissionID: Any) -> Any:  # noqa: N802 (pysyncobj's name)
        starting = transmissionID not in self._Serializer__transmissions  # type: ignore[attr-defined]
        if starting and self._Serializer__pid == 0 and not self._sendable():  # type: ignore[attr-defined]
            return None
        return super().getTransmissionData(transmissionID)

    def setTransmissionData(self, data: Any) -> bool:  # noqa: N802 (pysyncobj's name)
        if data is None:
            return False
        chunk, first, last = data
        partial = self._final + ".1.tmp"
        try:
            if first:
                self._close_incoming()
                self._incoming = open(partial, "wb")
            if self._incoming is None:
                return False  # the middle of a transfer whose start this node missed
            self._incoming.write(chunk)
            if not last:
                return False
            self._incoming.flush()
            os.fsync(self._incoming.fileno())
            self._close_incoming()
            return self._accept(partial)
        except OSError:
            logger.exception("raft %s: storing a snapshot received from the leader failed", self._address)
            self._close_incoming()
            return False

    def _accept(self, partial: str) -> bool:
        try:
            with open(partial, "rb") as f:
                last, _, _, _ = read_snapshot_meta(f)
                verified_snapshot_state(f)
        except (SnapshotCorrupt, ValueError) as exc:
            os.replace(partial, self._final + _REJECTED)
            logger.error("raft %s: a snapshot received from the leader failed verification (%s); "
                         "nothing of it was applied, it is kept as %s and the leader will send it again",
                         self._address, exc, self._final + _REJECTED)
            return False
        os.replace(partial, self._final)
        _fsync_dir(os.path.dirname(self._final))
        logger.info("raft %s: snapshot at index %d received from the leader and verified", self._address, last[1])
        return True

    def _close_incoming(self) -> None:
        if self._incoming is not None:
            self._incoming.close()
            self._incoming = None


class _ReplicatedLog(SyncObj):
    """The pysyncobj object. Holds no state of its own: state lives in the store."""

    def __init__(self, on_apply: Callable[[int, bytes], Any], self_address: str, peers: list[str],
                 conf: SyncObjConf, sendable: Callable[[], bool] | None = None) -> None:
        self._on_apply = on_apply
        self.messages_received = 0  # counted by _Transport: part of the tick loop's progress test
        try:
            super().__init__(self_address, peers, conf, transportClass=_Transport)
        except SyncObjException as exc:
            self._doDestroy()  # the journal is open and the transport half built: close both
            raise OSError(f"raft: cannot bind {self_address}: {exc.errorCode}") from exc
        if sendable is not None:  # pysyncobj first reads or sends a snapshot in a tick, never before
            self._SyncObj__serializer = _CheckedSerializer(conf, sendable, self_address)  # type: ignore[attr-defined]

    # NEVER rename this method and never add another @replicated method: pysyncobj numbers
    # replicated methods by their sorted names and stores the number in every log entry. Change
    # the payload instead: a new opcode (see Op) or a version inside it.
    @replicated
    def apply(self, entry: bytes) -> Any:
        # pysyncobj increments raftLastApplied only after this returns (syncobj.py L718-725).
        return self._on_apply(self.raftLastApplied + 1, entry)

    def awaiting_outcome(self) -> list[Callable[[Any, int], None]]:
        """Outcome callbacks of proposals that may be in the log: appended and not applied yet, or
        forwarded to the leader (tick thread only)."""
        waiting = self._SyncObj__commandsWaitingCommit
        forwarded = self._SyncObj__commandsWaitingReply
        return [callback for subscribers in list(waiting.values()) for _, callback in subscribers] + list(
            forwarded.values())

    def leader_reachable(self) -> bool:
        """A leader is known and is this node or connected to it."""
        leader = self._getLeader()
        return leader is not None and (leader == self.selfNode or self.isNodeConnected(leader))

    def keep_log_after_snapshot(self, prev: tuple[bytes, int, int], last: tuple[bytes, int, int]) -> None:
        """Drop the journal's entries before ``prev`` if it holds ``prev`` and ``last`` further on.

        Loading a snapshot, pysyncobj clears the whole journal unless it starts with exactly the
        snapshot's last two entries (syncobj.py L1489-1495). A node that crashed after its new
        snapshot was put in place but before the journal was compacted (the next tick) would so
        lose the entries after the snapshot at restart, acknowledged ones included. Compacting
        first keeps them. Reads pysyncobj's private journal (as ``_Transport`` does).
        """
        log = self._SyncObj__raftLog  # type: ignore[attr-defined]
        if not len(log):
            return
        position = prev[1] - log[0][1]
        if 0 < position < len(log) - 1 and log[position] == prev and log[position + 1] == last:
            log.deleteEntriesTo(position)

    def restart_election_timer(self) -> None:
        """As if the leader had just been heard from: after an install that took a while.

        The snapshot came from the leader, but pysyncobj started the election timer before
        loading it (syncobj.py L951) and checks it early in the next tick (L634-635): a
        follower whose install outlasted the election timeout would call an election at once,
        and without pre-vote its higher term unseats a healthy leader.
        """
        self._SyncObj__raftElectionDeadline = (  # type: ignore[attr-defined]
            time.monotonic() + self._SyncObj__generateRaftTimeout())  # type: ignore[attr-defined]


class RaftNode:
    """One Raft member: propose bytes, get the state machine's result once applied here."""

    def __init__(
        self,
        self_address: str,
        peers: list[str],
        data_dir: str,
        apply_entry: ApplyEntry,
        last_applied: Callable[[], int],
        *,
        snapshot_writer: SnapshotWriter | None = None,
        snapshot_reader: SnapshotReader | None = None,
        tuning: RaftTuning = RaftTuning(),
        on_fatal: Callable[[BaseException], None] | None = None,
        password: str | None = None,
    ) -> None:
        """Open the journal in ``data_dir/raft``, bind ``self_address`` and start ticking.

        ``apply_entry(index, entry)`` applies one committed entry (never a no-op) and returns its
        result; it must not raise for user errors: an exception stops the node. ``last_applied()``
        is the store's last applied index (cheap: called per entry); entries at or below it are
        skipped. ``snapshot_writer()`` captures the state machine's state (a ``StateSnapshot``;
        called and written out on a thread of its own, while entries are applied) and
        ``snapshot_reader(stream)`` replaces the state machine's state by one read from a
        verified stream; without them log compaction is disabled and the journal grows without
        bound. ``on_fatal`` is called on the tick thread after the node stopped on an error.
        ``password`` (every member the same) authenticates and encrypts the Raft traffic.
        """
        if (snapshot_writer is None) != (snapshot_reader is None):
            raise ValueError("give both snapshot_writer and snapshot_reader, or neither")
        self.address = self_address
        self._apply_entry = apply_entry
        self._last_applied = last_applied
        self._snapshot_writer = snapshot_writer
        self._snapshot_reader = snapshot_reader
        self._tuning = tuning
        self._on_fatal = on_fatal
        self._password = password or None
        self._waiters = _Waiters()
        self._failure: BaseException | None = None
        self._stopping = False
        self._stopped = False
        self._enqueued = 0
        self._enqueued_lock = threading.Lock()
        self._barrier_next: asyncio.Future[None] | None = None
        self._barrier_flying = False
        # Proposals kept back for want of a reachable leader (any thread, under the lock); since
        # when no leader is reachable (tick thread; None while one is; a starting node gets its
        # first election's time on top).
        self._parked: dict[int, bytes] = {}
        self._parked_lock = threading.Lock()
        self._leaderless_since: float | None = time.monotonic() + tuning.election_timeout_max
        self._refusing = False
        self._snapshot_job: _SnapshotJob | None = None
        self._snapshot_failed = False  # _write_snapshot raised: report FAILED once
        # (last, prev, cluster) of the snapshot file in place, and its (inode, size, mtime) when
        # it was last verified whole (tick thread)
        self._snapshot_in_place: tuple[Any, Any, list[str]] | None = None
        self._snapshot_verified: tuple[int, int, int] | None = None
        self._snapshot_check: _FileCheck | None = None  # a version being read, off the tick thread
        self._rewrite_after = 0.0  # no new attempt to rewrite a damaged snapshot before this
        self._snapshots_written = 0
        self._snapshots_installed = 0
        raft_dir = self._raft_dir = os.path.join(data_dir, "raft")
        os.makedirs(raft_dir, exist_ok=True)
        for stale in _SNAPSHOT_TEMPORARIES:  # left by a crash while a snapshot was written or read
            path = os.path.join(raft_dir, "snapshot" + stale)
            if os.path.exists(path):
                os.unlink(path)
        install_durable_journal()
        others = sorted({peer for peer in peers if peer != self_address})
        self._obj = _ReplicatedLog(self._apply, self_address, others, self._conf(raft_dir),
                                   self._snapshot_sendable if snapshot_writer is not None else None)
        self._wakeup = PipeNotifier(self._obj._poller)
        self._thread = threading.Thread(target=self._run, name=f"raft-{self_address}", daemon=True)
        self._thread.start()

    def _conf(self, raft_dir: str) -> SyncObjConf:
        t = self._tuning
        with_snapshots = self._snapshot_writer is not None
        return SyncObjConf(
            autoTick=False,  # our tick thread (_run) decides when to tick and how long to wait
            appendEntriesUseBatch=False,  # wake the poller per proposal, send entries at once
            appendEntriesPeriod=t.heartbeat,
            appendEntriesBatchSizeBytes=_APPEND_ENTRIES_BATCH_BYTES,
            raftMinTimeout=t.election_timeout_min,
            raftMaxTimeout=t.election_timeout_max,
            leaderFallbackTimeout=t.leader_fallback,
            connectionTimeout=t.connection_timeout,
            connectionRetryTime=t.reconnect_interval,
            dnsCacheTime=t.dns_cache_time,
            dnsFailCacheTime=t.dns_fail_cache_time,
            commandsQueueSize=100_000,
            commandsWaitLeader=False,  # we keep proposals during elections (_parked), bounded
            dynamicMembershipChange=True,
            bindAddress=self.address,  # pysyncobj would otherwise bind 0.0.0.0
            maxBindRetries=1,  # fail at once if the port is taken (0 = spin forever)
            journalFile=os.path.join(raft_dir, "journal"),
            fullDumpFile=os.path.join(raft_dir, "snapshot") if with_snapshots else None,
            # Without hooks pysyncobj would pickle this object's attributes: never let it.
            logCompactionMinEntries=t.snapshot_min_entries if with_snapshots else _DISABLED,
            logCompactionMinTime=t.snapshot_min_interval if with_snapshots else _DISABLED,
            serializer=self._write_snapshot if with_snapshots else None,
            serializeChecker=self._snapshot_progress if with_snapshots else None,
            deserializer=self._read_snapshot if with_snapshots else None,
            useFork=False,
            onStateChanged=self._on_state_changed,
            # Fernet (AES-CBC + HMAC) keyed from the password: a message that does not verify is
            # dropped, with its connection, before pysyncobj unpickles it.
            password=self._password,
        )

    # -- the tick thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        """Tick again at once after a tick that made progress; otherwise wait for I/O or a timer.

        A tick takes queued proposals, then ends with a poll that may handle messages whose
        effect (a leader's match index) only the next tick acts on; a proposal appended by a
        one-node leader commits in the next tick; a proposal queued after the tick took the queue
        had its pipe byte drained by that poll. All count as progress, so none waits for the idle
        timeout: a proposal counted after the check below wakes the idle poll (``_submit``).
        """
        obj = self._obj
        idle_wait = self._tuning.heartbeat / 2  # heartbeats and elections are checked per tick

        def progress() -> tuple[int, int, int, int, int]:
            return (obj._getRaftLogSize(), obj.raftCommitIndex, obj.raftLastApplied,
                    obj.messages_received, self._enqueued)

        next_expiry = 0.0
        try:
            while not self._stopping:
                before = progress()
                led, term = obj._isLeader(), obj.raftCurrentTerm
                obj.doTick(0.0)
                if self._failure is not None:  # a snapshot failed to load (pysyncobj logs only)
                    raise self._failure
                now = time.monotonic()
                self._follow_leader(now, stepped_down=led and not obj._isLeader() and obj.raftCurrentTerm == term)
                if now >= next_expiry:  # a scan of every waiter: not on every tick
                    self._expire(now)
                    next_expiry = now + _EXPIRY_SCAN_INTERVAL
                if progress() == before:
                    obj._poller.poll(idle_wait)
        except BaseException as exc:
            self._failure = self._failure or exc
            logger.critical("raft %s: stopping on a fatal error", self.address, exc_info=exc)
        finally:
            self._stopped = True
            try:
                obj.destroy()  # autoTick=False: closes transport and journal right here
            except Exception:
                logger.exception("raft %s: closing failed", self.address)
            self._fail_all(NodeStopped(maybe_applied=True))
            if self._failure is not None and self._on_fatal is not None:
                try:
                    self._on_fatal(self._failure)
                except Exception:
                    logger.exception("raft %s: on_fatal callback failed", self.address)

    def _apply(self, index: int, entry: bytes) -> Any:
        """The replicated method's body: skip, handle a no-op, or hand over to the state machine."""
        if self._failure is not None:
            raise RuntimeError("raft node failed earlier; refusing to apply")
        if index <= self._last_applied() or entry[:1] == NOOP_ENTRY:
            return None
        try:
            return self._apply_entry(index, entry)
        except BaseException as exc:
            self._failure = exc
            logger.critical("raft %s: apply of entry %d failed: a bug, stopping", self.address, index)
            raise

    def _follow_leader(self, now: float, stepped_down: bool) -> None:
        """Hand parked proposals to a reachable leader; refuse everything once leaderless too long.

        A known leader this node has no connection to counts as none. A leader that stepped down
        for want of a quorum (same term, no leader) has already waited ``leader_fallback`` and
        refuses at once. Parked proposals were never appended: they fail with
        ``maybe_applied=False``. Proposals appended here or forwarded may still commit once a
        leader is heard again: they fail with ``maybe_applied=True``.
        """
        if self._obj.leader_reachable():
            self._leaderless_since, self._refusing = None, False
            for token, entry in self._unpark().items():
                if self._waiters.alive(token):
                    self._hand_over(token, entry)
            return
        wait = self._tuning.leader_wait
        if self._leaderless_since is None:
            self._leaderless_since = now - wait if stepped_down else now
        if not self._refusing:
            if now - self._leaderless_since < wait:
                return
            self._refusing = True
            logger.warning("raft %s: no leader for %.1f s, refusing proposals and reads until one is known",
                           self.address, now - self._leaderless_since)
            for callback in self._obj.awaiting_outcome():
                self._call(callback, None, _NO_QUORUM)
        for token in self._unpark():
            done = self._waiters.pop(token)
            if done is not None:
                self._call(done, None, self._no_quorum(maybe_applied=False))

    def _park(self, token: int, entry: bytes) -> None:
        with self._parked_lock:
            self._parked[token] = entry

    def _unpark(self) -> dict[int, bytes]:
        with self._parked_lock:
            parked, self._parked = self._parked, {}
        return parked

    def _no_quorum(self, maybe_applied: bool) -> NoQuorum:
        return NoQuorum(f"no leader known for {self._tuning.leader_wait} s: this node is cut off from its "
                        "quorum or an election is failing", maybe_applied=maybe_applied)

    def _expire(self, now: float) -> None:
        for done in self._waiters.expired(now):
            self._call(done, None, ProposalFailed("proposal timed out", maybe_applied=True))

    def _fail_all(self, error: ProposalFailed) -> None:
        for done in self._waiters.drain():
            self._call(done, None, error)

    @staticmethod
    def _call(done: Done, result: Any, error: BaseException | None) -> None:
        try:
            done(result, error)
        except Exception:  # an outcome callback must never break pysyncobj's apply loop
            logger.exception("raft: proposal outcome callback failed")

    def _on_result(self, token: int, entry: bytes, result: Any, reason: int) -> None:
        if reason == FAIL_REASON.MISSING_LEADER and not self._refusing and self._waiters.alive(token):
            self._park(token, entry)  # never appended: kept for the next leader
            return
        done = self._waiters.pop(token)
        if done is not None:
            self._call(done, result, None if reason == FAIL_REASON.SUCCESS else self._error(reason))

    def _error(self, reason: int) -> ProposalFailed:
        if reason == _NO_QUORUM:
            return self._no_quorum(maybe_applied=True)
        if reason == FAIL_REASON.MISSING_LEADER:
            return self._no_quorum(maybe_applied=False)
        leader = self._obj._getLeader()
        hint = None if leader is None else leader.id
        if reason == FAIL_REASON.NOT_LEADER:
            return NotLeader("forwarded to a node that is no longer leader", hint, maybe_applied=False)
        if reason == FAIL_REASON.LEADER_CHANGED:
            return NotLeader("leader changed before confirming the proposal", hint, maybe_applied=True)
        if reason == FAIL_REASON.QUEUE_FULL:
            return ProposalFailed("raft proposal queue full", maybe_applied=False)
        if reason == FAIL_REASON.DISCARDED:
            return ProposalFailed("entry discarded: a new leader overwrote it", maybe_applied=False)
        return ProposalFailed(f"proposal outcome unknown (pysyncobj reason {reason})", maybe_applied=True)

    def _on_state_changed(self, old: int, new: int) -> None:
        # Called before a candidate's term is raised (syncobj.py L639-640): only a leader's is right.
        term = f" (term {self._obj.raftCurrentTerm})" if _ROLES.get(new) == "leader" else ""
        logger.info("raft %s: %s -> %s%s", self.address, _ROLES.get(old), _ROLES.get(new), term)

    # -- proposals ----------------------------------------------------------------------------------

    def _submit(self, entry: bytes, done: Done, timeout: float | None) -> None:
        if not isinstance(entry, bytes) or not entry:
            raise ValueError("a raft entry is non-empty bytes starting with its opcode")
        if len(entry) > MAX_ENTRY_BYTES:
            raise ValueError(f"raft entry of {len(entry)} bytes exceeds {MAX_ENTRY_BYTES}")
        token = self._waiters.add(done, self._tuning.propose_timeout if timeout is None else timeout)
        if self._stopped:  # checked after add: _run sets _stopped before draining the waiters
            if self._waiters.pop(token) is not None:
                self._call(done, None, NodeStopped(maybe_applied=False))
            return
        self._hand_over(token, entry)
        # pysyncobj's own wake-up is lost if its pipe byte is drained by the poll that ends a tick
        # after that tick took the queued commands: count (_hand_over), then wake (see _run).
        self._wakeup.notify()

    def _hand_over(self, token: int, entry: bytes) -> None:
        """Queue ``entry`` in pysyncobj, its outcome going to ``token``'s waiter, or park it while
        no leader is reachable (pysyncobj would forward it into a closed connection). Any thread:
        pysyncobj's state read here may be a moment old, which costs a park or a lost forward."""
        if self._obj.leader_reachable():
            self._obj.apply(entry, callback=functools.partial(self._on_result, token, entry))
        else:
            self._park(token, entry)
        with self._enqueued_lock:
            self._enqueued += 1

    def propose(self, entry: bytes, timeout: float | None = None) -> concurrent.futures.Future[Any]:
        """Propose ``entry``; the future gets apply_entry's result once it is applied on this node.

        Fails with ProposalFailed (NotLeader among them) on any Raft-level failure and after
        ``timeout`` (default: the tuning's ``propose_timeout``); raises ValueError for a bad entry.
        """
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def done(result: Any, error: BaseException | None) -> None:
            if future.set_running_or_notify_cancel():
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)

        self._submit(entry, done, timeout)
        return future

    async def propose_async(self, entry: bytes, timeout: float | None = None) -> Any:
        """``propose`` for asyncio: the outcome is handed to the running loop, never blocking it."""
        return await self.propose_soon(entry, timeout)

    def propose_soon(self, entry: bytes, timeout: float | None = None) -> asyncio.Future[Any]:
        """``propose_async``, but handed to Raft before this returns (not when first awaited);
        the future gets the outcome on the running loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def done(result: Any, error: BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits for this outcome any more
                pass

        self._submit(entry, done, timeout)
        return future

    async def read_barrier(self) -> None:
        """Return once this node applied every entry committed when the call began.

        Proven through a quorum: a no-op goes through the log and is applied here. Barriers that
        arrive while a no-op is in flight share the next one (the one in flight may have been
        appended before they began), so there are at most two no-ops per round trip. A no-op that
        fails (a leader change discarded it, or it was forwarded to a leader that died) is proposed
        again: it changes nothing, so retrying is always safe. Fails with ``NoQuorum`` once this
        node has known no leader for ``leader_wait``, and with ``ProposalFailed`` after
        ``propose_timeout``; refuse the read then, or retry later. All callers must use one event
        loop.
        """
        group = self._barrier_next
        if group is None:
            group = self._barrier_next = asyncio.get_running_loop().create_future()
            if not self._barrier_flying:
                self._launch_barrier()
        await asyncio.shield(group)

    def _launch_barrier(self) -> None:
        group, self._barrier_next = self._barrier_next, None
        assert group is not None
        self._barrier_flying = True
        flight = asyncio.ensure_future(self._barrier_flight())
        flight.add_done_callback(functools.partial(self._barrier_landed, group))

    async def _barrier_flight(self) -> None:
        deadline = time.monotonic() + self._tuning.propose_timeout
        while True:
            try:
                await self.propose_async(NOOP_ENTRY, timeout=max(deadline - time.monotonic(), 0.001))
                return
            except NoQuorum:
                raise
            except ProposalFailed:
                if self._stopped or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(_BARRIER_RETRY_PAUSE)

    def _barrier_landed(self, group: asyncio.Future[None], flight: asyncio.Future[Any]) -> None:
        self._barrier_flying = False
        if flight.cancelled():
            error: BaseException | None = ProposalFailed("barrier cancelled", maybe_applied=True)
        else:
            error = flight.exception()
        _settle(group, None, error)
        if error is not None:
            group.exception()  # retrieved here too: every waiter may have been cancelled
        if self._barrier_next is not None:
            self._launch_barrier()

    # -- snapshots ----------------------------------------------------------------------------------

    def _write_snapshot(self, path: str, raft_data: tuple[Any, Any, Any]) -> None:
        """pysyncobj's serializer (tick thread): start writing a snapshot on a thread of its own.

        Returns without creating ``path`` (pysyncobj's ``.tmp`` name): pysyncobj's rename of it
        then fails quietly and leaves its serializer busy until ``_snapshot_progress`` reports
        the outcome; see the module docstring. The state is captured on that thread, so it holds
        every entry up to the snapshot's index and maybe later ones: harmless, as entries at or
        below the state machine's ``last_applied`` are skipped wherever the snapshot is loaded.
        """
        last, prev, cluster = raft_data
        try:
            if os.path.exists(path):
                os.unlink(path)
            self._snapshot_job = _SnapshotJob(os.path.join(self._raft_dir, "snapshot"), last, prev,
                                              sorted(node.id for node in cluster), self._snapshot_writer)  # type: ignore[arg-type]
        except Exception:
            logger.exception("raft %s: starting the snapshot at index %d failed", self.address, last[1])
            self._snapshot_failed = True  # pysyncobj's serializer is busy until told FAILED
            raise

    def _snapshot_progress(self) -> int:
        """pysyncobj's serializeChecker (tick thread): the state of the snapshot being written.

        A finished file is renamed into place here, on the tick thread, so that it can never
        replace a snapshot received from the leader in the meantime (those are renamed and
        loaded on this thread too, and a load supersedes the job).
        """
        if self._snapshot_failed:
            self._snapshot_failed = False
            return SERIALIZER_STATE.FAILED
        job = self._snapshot_job
        if job is None:
            return SERIALIZER_STATE.NOT_SERIALIZING
        if job.thread.is_alive():
            return SERIALIZER_STATE.SERIALIZING
        self._snapshot_job = None
        # A rewrite of a damaged snapshot is no compaction: pysyncobj must not hear of it.
        failed = SERIALIZER_STATE.NOT_SERIALIZING if job.rewrite else SERIALIZER_STATE.FAILED
        if job.error is not None or job.superseded:
            if job.error is not None:
                logger.error("raft %s: writing the snapshot at index %d failed: %r",
                             self.address, job.index, job.error)
            if os.path.exists(job.partial):
                os.unlink(job.partial)
            return failed
        try:
            os.replace(job.partial, job.final)
            _fsync_dir(self._raft_dir)
            self._snapshot_verified = _file_version(job.final)  # written and fsynced just now
        except OSError:
            logger.exception("raft %s: putting the snapshot at index %d in place failed",
                             self.address, job.index)
            return failed
        self._snapshot_in_place = job.meta
        if job.rewrite:
            logger.warning("raft %s: the damaged snapshot at index %d was replaced by one rewritten "
                           "from the store (state at %d, %d bytes): followers get this one",
                           self.address, job.index, job.state_index, job.size)
            return SERIALIZER_STATE.NOT_SERIALIZING
        self._snapshots_written += 1
        logger.info("raft %s: snapshot at index %d (state at %d) written on the snapshot thread: "
                    "state captured in %.1f ms, %d bytes written in %.1f ms", self.address,
                    job.index, job.state_index, job.capture * 1000, job.size, job.write * 1000)
        return SERIALIZER_STATE.SUCCESS

    def _read_snapshot(self, path: str) -> tuple[Any, Any, Any]:
        """pysyncobj's deserializer (tick thread): install a snapshot newer than the state machine.

        Both checksums are verified before the state machine sees a byte. A snapshot whose
        state is not newer than the state machine's (a restart) is not read past its metadata.
        """
        try:
            if self._snapshot_job is not None:  # our own, older snapshot must not replace this one
                self._snapshot_job.superseded = True
            with open(path, "rb") as f:
                os.fsync(f.fileno())  # a snapshot received from the leader was never fsynced
                _fsync_dir(self._raft_dir)  # nor the rename that put it in place
                last, prev, cluster, state_index = read_snapshot_meta(f)
                have = self._last_applied()
                if have < state_index:
                    self._install(f, last[1], state_index, have)
                    self._obj.restart_election_timer()
                    intact = True
                else:
                    intact = self._state_intact(f, last[1])
                self._snapshot_in_place = (last, prev, cluster)
                self._snapshot_verified = _file_version(path) if intact else None
            self._obj.keep_log_after_snapshot(prev, last)
            if not intact:
                self._rewrite_snapshot()
            return last, prev, {TCPNode(address) for address in cluster}
        except BaseException as exc:
            # pysyncobj only logs a failing deserializer and would go on without the state:
            # record it so that the tick thread stops the node.
            if isinstance(exc, SnapshotCorrupt):
                logger.critical("raft %s: %s; the store was not touched. With peers the node rebuilds "
                                "itself from them (unless --no-auto-rebuild); alone, restore the data "
                                "dir from a backup", self.address, exc)
            self._failure = exc
            raise

    def _state_intact(self, f: BinaryIO, index: int) -> bool:
        """Check the state of a snapshot the state machine is past: unused here, but sent to followers."""
        try:
            verified_snapshot_state(f)
            return True
        except SnapshotCorrupt as exc:
            logger.error("raft %s: this node's snapshot at index %d is damaged (%s); the store is past "
                         "it, so nothing is lost: it is rewritten from the store and no snapshot is "
                         "sent to a follower until then", self.address, index, exc)
            return False

    def _snapshot_sendable(self) -> bool:
        """Whether the snapshot file in place may be sent to a follower (tick thread, leader).

        Each version of the file (inode, size, mtime) is read whole once, on a thread of its own
        (``_FileCheck``: a large file must not hold up heartbeats): both checksums, and its
        metadata must be that of the snapshot this node's log starts from. Until the check is
        done nothing is sent. A file that fails is never sent: it is rewritten from the store
        (``_rewrite_snapshot``), and until then the follower waits (checked again at most every
        ``_REWRITE_RETRY`` s, say if the rewrite failed).
        """
        path = os.path.join(self._raft_dir, "snapshot")
        try:
            version = _file_version(path)
        except OSError:
            return False  # no snapshot yet
        if version == self._snapshot_verified:
            return True
        if self._snapshot_job is not None or time.monotonic() < self._rewrite_after:
            return False  # a new snapshot is being written, or this one failed a moment ago
        check = self._snapshot_check
        if check is None or check.version != version:
            self._snapshot_check = _FileCheck(path, version)
            return False
        if check.thread.is_alive():
            return False
        self._snapshot_check = None
        held = self._snapshot_in_place
        problem = check.error
        if problem is None and (held is None or check.meta != (tuple(held[0]), tuple(held[1]))):
            problem = SnapshotCorrupt(f"{path}: holds the snapshot at index {check.meta[0][1]}, the log "
                                      f"starts from the one at {held[0][1] if held else 'none'}")
        if problem is not None:
            logger.error("raft %s: not sending this node's snapshot to a follower: %s", self.address, problem)
            self._rewrite_snapshot()
            return False
        self._snapshot_verified = version
        return True

    def _rewrite_snapshot(self) -> None:
        """Replace a damaged snapshot file by one captured from the store now (tick thread).

        It keeps the damaged one's last and previous entries and members, which pysyncobj's log
        starts from and a follower's log will start from (``__loadDumpFile``, syncobj.py L1489):
        only the state is newer, as in every snapshot (entries it already holds are skipped).
        """
        self._rewrite_after = time.monotonic() + _REWRITE_RETRY
        held = self._snapshot_in_place
        if held is None:
            logger.critical("raft %s: the snapshot's log position is unknown, it cannot be rewritten: "
                            "this node sends no snapshot to followers; rebuild it", self.address)
            return
        if self._snapshot_job is None:
            last, prev, cluster = held
            self._snapshot_job = _SnapshotJob(os.path.join(self._raft_dir, "snapshot"), last, prev, cluster,
                                              self._snapshot_writer, rewrite=True)  # type: ignore[arg-type]

    def _install(self, f: BinaryIO, index: int, state_index: int, have: int) -> None:
        started = time.perf_counter()
        logger.info("raft %s: installing the snapshot at index %d (state at %d) over a state "
                    "machine at %d", self.address, index, state_index, have)
        stream = verified_snapshot_state(f)
        verified = time.perf_counter()
        self._snapshot_reader(stream)  # type: ignore[misc]
        self._snapshots_installed += 1
        done = time.perf_counter()
        logger.info("raft %s: snapshot at index %d installed: %d bytes, checksum %.1f ms, "
                    "install %.1f ms", self.address, index, stream.length,
                    (verified - started) * 1000, (done - verified) * 1000)

    # -- status and lifecycle -----------------------------------------------------------------------

    def status(self) -> RaftStatus:
        """This node's view: role, term, leader, commit/applied index, peers; safe from any thread."""
        if self._stopped:
            return RaftStatus(self.address, "stopped", 0, None, 0, 0, 0, False, {}, {})
        for _ in range(3):  # getStatus iterates sets the tick thread may resize (membership)
            try:
                raw = self._obj.getStatus()
                break
            except RuntimeError:
                continue
        else:
            raise RuntimeError("raft status kept changing while read")
        return replace(RaftStatus.from_pysyncobj(self.address, raw),
                       snapshots_written=self._snapshots_written,
                       snapshots_installed=self._snapshots_installed)

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped the node, if one did."""
        return self._failure

    def stop(self, timeout: float = 5.0) -> None:
        """Stop ticking, close the transport and the journal; pending proposals fail.

        From the tick thread itself (``on_fatal``, ``apply_entry``) it only asks the loop to end.
        """
        self._stopping = True
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._wakeup.notify()
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"raft {self.address}: tick thread did not stop in {timeout} s")
            job = self._snapshot_job
            if job is not None:  # its unfinished file is removed at the next start
                job.thread.join(timeout)


def _suffixed(raw: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {key[len(prefix):]: value for key, value in raw.items() if key.startswith(prefix)}


# -- snapshot file container ------------------------------------------------------------------------
#
# FILE_MAGIC, u32 meta length, u32 CRC32 of meta, meta (msgpack [last entry, previous entry,
# cluster addresses, state index], an entry being [command, idx, term]; the state index, the state
# machine's last_applied in the state, is absent in files of older releases), the state machine's
# snapshot bytes, then u64 state length and u32 CRC32 of the state. pysyncobj sends this file to
# followers as is.

SNAPSHOT_MAGIC = b"MQ9SNAP\x01"
_META_HEAD = struct.Struct("<II")
_STATE_TAIL = struct.Struct("<QI")
_COPY_CHUNK = 1 << 20


def _snapshot_meta(last: Any, prev: Any, cluster: list[str], state_index: int) -> bytes:
    return msgpack.packb([list(last), list(prev), cluster, state_index], use_bin_type=True)


class _Summing:
    """A write-only stream that counts and checksums what passes through to ``out``."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.length = 0
        self.crc = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self.length += len(data)
        self.crc = zlib.crc32(data, self.crc)
        return len(data)

    def flush(self) -> None:
        pass


def write_snapshot_file(path: str, meta: bytes, write_state: Callable[[BinaryIO], None]) -> int:
    """Write the container with ``write_state``'s bytes to ``path`` and fsync it; its size."""
    with open(path, "wb") as out:
        out.write(SNAPSHOT_MAGIC + _META_HEAD.pack(len(meta), zlib.crc32(meta)) + meta)
        state = _Summing(out)
        write_state(state)  # type: ignore[arg-type]
        out.write(_STATE_TAIL.pack(state.length, state.crc))
        out.flush()
        os.fsync(out.fileno())
        return out.tell()


class _SnapshotJob:
    """One snapshot file, captured and written by a thread of its own."""

    def __init__(self, final: str, last: Any, prev: Any, cluster: list[str], capture: SnapshotWriter,
                 rewrite: bool = False) -> None:
        self.final = final
        self.partial = final + ".writing"
        self.meta = (last, prev, cluster)
        self.rewrite = rewrite  # a damaged file's replacement, not a log compaction
        self.index = last[1]
        self.state_index = 0
        self.capture = self.write = 0.0  # seconds each step took
        self.size = 0
        self.error: BaseException | None = None
        self.superseded = False  # a snapshot was loaded meanwhile: this one must not replace it
        self.thread = threading.Thread(target=self._run, args=(last, prev, cluster, capture),
                                       name="raft-snapshot", daemon=True)
        self.thread.start()

    def _run(self, last: Any, prev: Any, cluster: list[str], capture: SnapshotWriter) -> None:
        started = time.perf_counter()
        try:
            state = capture()
        except BaseException as exc:
            self.error = exc
            return
        captured = time.perf_counter()
        self.capture, self.state_index = captured - started, state.index
        try:
            meta = _snapshot_meta(last, prev, cluster, state.index)
            self.size = write_snapshot_file(self.partial, meta, state.write_to)
        except BaseException as exc:
            self.error = exc
        finally:
            try:
                state.discard()
            except Exception:
                logger.exception("raft: discarding a captured snapshot state failed")
            self.write = time.perf_counter() - captured


class _FileCheck:
    """One version of a snapshot file read whole (both checksums) by a thread of its own."""

    def __init__(self, path: str, version: tuple[int, int, int]) -> None:
        self.version = version
        self.meta: tuple[tuple[Any, ...], tuple[Any, ...]] = ((), ())  # (last, prev) once it passed
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(path,), name="raft-snapshot-check", daemon=True)
        self.thread.start()

    def _run(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                last, prev, _, _ = read_snapshot_meta(f)
                verified_snapshot_state(f)
            self.meta = (tuple(last), tuple(prev))
        except (SnapshotCorrupt, OSError, ValueError) as exc:
            self.error = exc


def _file_version(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_snapshot_meta(f: BinaryIO) -> tuple[tuple[bytes, int, int], tuple[bytes, int, int], list[str], int]:
    """(last entry, previous entry, cluster addresses, state index); leaves ``f`` at the state."""
    head = f.read(len(SNAPSHOT_MAGIC) + _META_HEAD.size)
    if len(head) < len(SNAPSHOT_MAGIC) + _META_HEAD.size or not head.startswith(SNAPSHOT_MAGIC):
        raise SnapshotCorrupt(f"{f.name}: not an mq9 snapshot (header {head[:8]!r})")
    length, crc = _META_HEAD.unpack_from(head, len(SNAPSHOT_MAGIC))
    meta = f.read(length)
    if len(meta) != length or zlib.crc32(meta) != crc:
        raise SnapshotCorrupt(f"{f.name}: snapshot metadata truncated or checksum mismatch")
    last, prev, cluster, *rest = msgpack.unpackb(meta, raw=False)
    state_index = rest[0] if rest else last[1]
    return tuple(last), tuple(prev), cluster, state_index  # type: ignore[return-value]


class SnapshotState:
    """The state bytes of a snapshot file, already verified: a read-only stream of ``length`` bytes."""

    def __init__(self, f: BinaryIO, start: int, length: int) -> None:
        self._f = f
        self.length = length
        self._left = length
        f.seek(start)

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._left:
            size = self._left
        data = self._f.read(size)
        if len(data) != size:
            raise SnapshotCorrupt(f"{self._f.name}: snapshot changed while it was read")
        self._left -= size
        return data


def verified_snapshot_state(f: BinaryIO) -> SnapshotState:
    """Check the length and checksum of the state after the metadata; the state as a stream."""
    start = f.tell()
    end = os.fstat(f.fileno()).st_size - _STATE_TAIL.size
    if end < start:
        raise SnapshotCorrupt(f"{f.name}: snapshot truncated")
    f.seek(end)
    length, crc = _STATE_TAIL.unpack(f.read(_STATE_TAIL.size))
    if length != end - start:
        raise SnapshotCorrupt(f"{f.name}: snapshot state is {end - start} bytes, expected {length}")
    f.seek(start)
    actual = 0
    remaining = length
    while remaining:
        chunk = f.read(min(_COPY_CHUNK, remaining))
        if not chunk:
            raise SnapshotCorrupt(f"{f.name}: snapshot truncated")
        actual = zlib.crc32(chunk, actual)
        remaining -= len(chunk)
    if actual != crc:
        raise SnapshotCorrupt(f"{f.name}: snapshot state checksum mismatch")
    return SnapshotState(f, start, length)
