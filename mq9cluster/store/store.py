"""The Store: opening, durability, atomic commits, checkpoints and restore of the RocksDB state.

The only place that opens RocksDB. Must not know about Raft or NATS: the Raft index is an
integer handed in by the caller, and ``last_applied`` is written in the same atomic write as the
state it produced. See docs/storage.md for the layout and the durability contract.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from rocksdict import (
    BlockBasedOptions,
    Checkpoint,
    DBRecoveryMode,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from mq9cluster.store import codecs, keys
from mq9cluster.store.batch import Batch
from mq9cluster.errors import AlreadyApplied, StoreError, StoreFormatError
from mq9cluster.store.reads import StoreReads, scan_keys

DEDUP_WINDOW = 100_000
"""Dedup entries are kept for this many Raft indexes after the one that wrote them."""


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
    # point deletes pile up at the front of the expiry and dedup ranges and of mailboxes
    # whose oldest messages are deleted: compact SST files that are mostly tombstones
    options.add_compact_on_deletion_collector_factory(4096, 2048, 0.5)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    options.set_block_based_table_factory(table)
    return options


class Store(StoreReads):
    """The mailbox state in one RocksDB directory.

    ``wal``/``sync`` choose durability: the Raft journal is the durable log and entries after
    ``last_applied`` are re-applied from it on restart, so the default is WAL on, no fsync per
    batch. ``dedup_window`` must be the same on every node of a cluster (it decides which dedup
    entries exist, which is replicated state).
    """

    def __init__(self, db: Rdict, path: Path, *, wal: bool, sync: bool,
                 dedup_window: int) -> None:
        self._db = db
        self.path = path
        self.dedup_window = dedup_window
        self._write_options = WriteOptions()
        # rocksdict 0.3.29 exposes disable_wal as a property; its stub says method
        self._write_options.disable_wal = not wal  # type: ignore[method-assign,assignment]
        self._write_options.sync = sync
        self._wal = wal
        self._lock = threading.Lock()
        self._last_applied = self._read_last_applied()
        self._dedup_oldest = self._first_dedup_index()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, wal: bool = True, sync: bool = False,
             dedup_window: int = DEDUP_WINDOW) -> Store:
        """Open or create the store at ``path``; StoreFormatError if it is of another format."""
        if sync and not wal:
            raise ValueError("sync=True needs wal=True: without a WAL there is nothing to fsync")
        if dedup_window < 1:
            raise ValueError("dedup_window must be at least 1")
        path = Path(path)
        try:
            db = Rdict(str(path), _options())
        except Exception as exc:
            raise StoreError(f"cannot open store at {path}: {exc}") from exc
        try:
            _check_format(db, path)
        except BaseException:
            db.close()
            raise
        return cls(db, path, wal=wal, sync=sync, dedup_window=dedup_window)

    @classmethod
    def restore(cls, checkpoint: str | os.PathLike[str], path: str | os.PathLike[str], *,
                wal: bool = True, sync: bool = False,
                dedup_window: int = DEDUP_WINDOW) -> Store:
        """Replace the store at ``path`` (which must be closed) by a copy of ``checkpoint``.

        The copy is opened and format-checked before it replaces anything, then swapped in by
        renames; ``checkpoint`` itself is left untouched.
        """
        path = Path(path)
        staging = path.with_name(path.name + ".restoring")
        retired = path.with_name(path.name + ".replaced")
        for leftover in (staging, retired):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.copytree(checkpoint, staging)
        try:
            cls.open(staging).close()
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if path.exists():
            path.rename(retired)
        staging.rename(path)
        shutil.rmtree(retired, ignore_errors=True)
        return cls.open(path, wal=wal, sync=sync, dedup_window=dedup_window)

    def close(self) -> None:
        """Flush and close; the object is unusable afterwards."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def last_applied(self) -> int:
        """The Raft index of the last committed batch (0 for a new store)."""
        return self._last_applied

    def batch(self, raft_index: int) -> Batch:
        """A batch for the entry at ``raft_index``; AlreadyApplied if that is not past
        ``last_applied`` (the caller skips such entries when the journal replays them)."""
        if raft_index <= self._last_applied:
            raise AlreadyApplied(f"raft index {raft_index} <= last_applied {self._last_applied}")
        return Batch(self._db, raft_index, self._commit)

    def checkpoint(self, dest: str | os.PathLike[str]) -> int:
        """Write a RocksDB checkpoint (hard links where possible) into ``dest``, which must not
        exist, and return the last_applied it holds. Safe to call while batches commit."""
        with self._lock:
            try:
                Checkpoint(self._db).create_checkpoint(str(dest))
            except Exception as exc:
                raise StoreError(f"cannot write checkpoint to {dest}: {exc}") from exc
            return self._last_applied

    def write_snapshot(self, path: str | os.PathLike[str]) -> int:
        """Make the store durable, then pack a checkpoint of it into one tar file at ``path``.

        Returns the last_applied the snapshot holds. Called by Raft before it drops journal
        entries, so ``persist()`` runs first: no entry is dropped that only the WAL's page cache held.
        """
        self.persist()
        with tempfile.TemporaryDirectory(prefix=".snapshot-", dir=Path(path).parent) as tmp:
            checkpoint = Path(tmp) / "checkpoint"
            index = self.checkpoint(checkpoint)
            with tarfile.open(path, "w") as tar:
                tar.add(checkpoint, arcname="checkpoint")
        return index

    def persist(self) -> None:
        """Make every committed batch survive a power loss (fsync the WAL, or flush memtables
        when the WAL is off). Call before the journal drops entries up to last_applied."""
        if self._wal:
            self._db.flush_wal(True)
        else:
            self._db.flush(True)

    def _commit(self, wb: WriteBatch, raft_index: int, fresh_dedup: set[bytes]) -> None:
        with self._lock:
            if raft_index <= self._last_applied:
                raise AlreadyApplied(
                    f"raft index {raft_index} <= last_applied {self._last_applied}")
            through = raft_index - self.dedup_window
            pruned = self._prune_dedup(wb, through, fresh_dedup)
            wb.put(keys.LAST_APPLIED_KEY, codecs.encode_u64(raft_index))
            self._db.write(wb, self._write_options)
            self._last_applied = raft_index
            if pruned:
                self._dedup_oldest = self._first_dedup_index(through + 1)
            elif fresh_dedup and self._dedup_oldest is None:
                self._dedup_oldest = raft_index

    def _prune_dedup(self, wb: WriteBatch, through: int, keep: set[bytes]) -> bool:
        """Queue deletion of dedup entries written at or before Raft index ``through``."""
        if self._dedup_oldest is None or self._dedup_oldest > through:
            return False
        start = keys.DEDUP_ORDER + keys.u64(self._dedup_oldest)
        for key in scan_keys(self._db, start, keys.dedup_order_bound(through)):
            wb.delete(key)
            proposal_id = keys.parse_dedup_order_key(key)[1]
            if proposal_id not in keep:
                wb.delete(keys.dedup_key(proposal_id))
        return True

    def _first_dedup_index(self, at_least: int = 0) -> int | None:
        """Raft index of the oldest dedup entry; seeking past ``at_least`` skips the tombstones
        that pruning leaves at the front of the range."""
        start = keys.DEDUP_ORDER + keys.u64(at_least)
        first = next(scan_keys(self._db, start, keys.end_of(keys.DEDUP_ORDER)), None)
        return None if first is None else keys.parse_dedup_order_key(first)[0]

    def _read_last_applied(self) -> int:
        raw = self._db.get(keys.LAST_APPLIED_KEY)
        return 0 if raw is None else codecs.decode_u64(raw)


def _check_format(db: Rdict, path: Path) -> None:
    """Stamp a new store with FORMAT_VERSION; refuse a store of another version or origin."""
    raw = db.get(keys.FORMAT_KEY)
    if raw is None:
        if next(iter(db.keys()), None) is not None:
            raise StoreFormatError(f"{path} holds a RocksDB without an mq9cluster format "
                                   "version: not an mq9cluster store")
        db.put(keys.FORMAT_KEY, codecs.encode_u64(keys.FORMAT_VERSION))
        return
    version = codecs.decode_u64(raw)
    if version != keys.FORMAT_VERSION:
        raise StoreFormatError(f"store at {path} has format version {version}; this build reads "
                               f"only version {keys.FORMAT_VERSION}. Restore a snapshot made by "
                               "this version, or run the matching mq9cluster release")
