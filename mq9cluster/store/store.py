"""The Store: opening, durability, atomic commits, checkpoints, snapshots and their install.

The only place that opens RocksDB. Must not know about Raft or NATS: the Raft index is an
integer handed in by the caller, and ``last_applied`` is written in the same atomic write as the
state it produced. See docs/storage.md for the layout and the durability contract.

Threads: one *writer* thread commits batches, takes snapshots and installs them; any thread may
read. Reads go through a short lease on the open RocksDB handle (``_reading``), so an install
can swap the handle under them: the old handle is closed, and its directory deleted, by whoever
leaves it last. A ``MessageScan`` needs the lease only to create its iterator: an iterator keeps
its RocksDB open by itself and goes on reading the old, fixed view after a swap.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Checkpoint,
    DBRecoveryMode,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from mq9cluster.errors import AlreadyApplied, StoreCorrupt, StoreError, StoreFormatError
from mq9cluster.store import codecs, generations, keys
from mq9cluster.store.batch import Batch
from mq9cluster.store.reads import StoreReads, scan_keys

DEDUP_WINDOW = 100_000
"""Dedup entries are kept for this many Raft indexes after the one that wrote them."""

_SNAPSHOT_DIR = "checkpoint"  # the one directory inside a snapshot's tar


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


@contextlib.contextmanager
def _damage_reported(directory: Path) -> Iterator[None]:
    """Raise RocksDB's errors whose status reads "Corruption:" (a damaged file or block) as
    StoreCorrupt, so that the node can tell damage from any other failure."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        if "Corruption:" not in str(exc):
            raise
        raise StoreCorrupt(f"store at {directory} is damaged: {exc}") from exc


def _open_db(directory: Path, *, existing: bool = False) -> Rdict:
    """Open and format-check the RocksDB in ``directory``; ``existing``: refuse to create one."""
    if existing and not (directory / "CURRENT").is_file():
        raise StoreError(f"{directory} holds no RocksDB (no CURRENT file)")
    with _damage_reported(directory):
        try:
            db = Rdict(str(directory), _options())
        except Exception as exc:
            if "Corruption:" in str(exc):
                raise  # as StoreCorrupt, by _damage_reported
            raise StoreError(f"cannot open store at {directory}: {exc}") from exc
        try:
            _check_format(db, directory, stamp=not existing)
        except BaseException:
            db.close()
            raise
    return db


class _Handle:
    """One open generation and the reads inside it; closed once retired and left by all."""

    __slots__ = ("db", "directory", "readers", "retired", "remove")

    def __init__(self, db: Rdict, directory: Path) -> None:
        self.db = db
        self.directory = directory
        self.readers = 0
        self.retired = False
        self.remove = False  # delete the directory once closed (a replaced generation)

    def dispose(self) -> None:
        self.db.close()
        if self.remove:
            generations.remove(self.directory)


class _Reading:
    """``with store._reading() as db``: the current handle, held open until the block ends."""

    __slots__ = ("_store", "_handle")

    def __init__(self, store: Store) -> None:
        self._store = store

    def __enter__(self) -> Rdict:
        self._handle = self._store._enter()
        return self._handle.db

    def __exit__(self, *exc: object) -> None:
        self._store._leave(self._handle)


class StoreSnapshot:
    """A checkpoint of the store at one ``last_applied`` (``index``), to be packed later.

    Taking it (``Store.snapshot``) is cheap: hard links plus a memtable flush. ``write_to`` packs
    it into a stream and may run on any thread, while the store goes on committing. ``discard``
    deletes the checkpoint; a crash leaves it to the next open's garbage collection.
    """

    def __init__(self, directory: Path, index: int) -> None:
        self.directory = directory
        self.index = index

    def write_to(self, out: BinaryIO) -> None:
        """Write the checkpoint as an uncompressed tar stream (one ``checkpoint/`` directory)."""
        with tarfile.open(fileobj=out, mode="w|") as tar:
            tar.add(self.directory, arcname=_SNAPSHOT_DIR)

    def discard(self) -> None:
        shutil.rmtree(self.directory.parent, ignore_errors=True)

    def __enter__(self) -> StoreSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def _checkpoint_files(source: BinaryIO) -> Iterator[tuple[str, BinaryIO]]:
    """(name, content) of each file of a snapshot tar stream; StoreError for anything unexpected."""
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:
            for member in tar:
                if member.isdir() and member.name == _SNAPSHOT_DIR:
                    continue
                parent, _, name = member.name.partition("/")
                if parent != _SNAPSHOT_DIR or not member.isfile():
                    raise StoreError(f"snapshot holds an unexpected entry {member.name!r}")
                content = tar.extractfile(member)
                assert content is not None  # a regular file
                yield name, content
    except tarfile.TarError as exc:
        raise StoreError(f"snapshot is not a readable tar stream: {exc}") from exc


class Store(StoreReads):
    """The mailbox state in one RocksDB directory (the current generation of ``path``).

    ``wal``/``sync`` choose durability: the Raft journal is the durable log and entries after
    ``last_applied`` are re-applied from it on restart, so the default is WAL on, no fsync per
    batch. ``dedup_window`` must be the same on every node of a cluster (it decides which dedup
    entries exist, which is replicated state).
    """

    def __init__(self, db: Rdict, path: Path, directory: Path, *, wal: bool, sync: bool,
                 dedup_window: int) -> None:
        self.path = path
        self.dedup_window = dedup_window
        self._write_options = WriteOptions()
        # rocksdict 0.3.29 exposes disable_wal as a property; its stub says method
        self._write_options.disable_wal = not wal  # type: ignore[method-assign,assignment]
        self._write_options.sync = sync
        self._wal = wal
        self._lock = threading.Lock()  # commits and the swap of the writer's handle
        self._handles = threading.Lock()  # the current handle and reader counts; held briefly
        self._handle: _Handle | None = None
        self._use(_Handle(db, directory))

    def _use(self, handle: _Handle) -> None:
        """Writer side: make ``handle`` the one batches, commits and reads go to."""
        self._db = handle.db
        self._handle = handle
        self._last_applied = self._read_last_applied()
        self._dedup_oldest = self._first_dedup_index()

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, wal: bool = True, sync: bool = False,
             dedup_window: int = DEDUP_WINDOW) -> Store:
        """Open or create the store at ``path``; StoreFormatError if it is of another format.

        Removes what an interrupted install, restore or snapshot left next to ``path``.
        """
        if sync and not wal:
            raise ValueError("sync=True needs wal=True: without a WAL there is nothing to fsync")
        if dedup_window < 1:
            raise ValueError("dedup_window must be at least 1")
        path = Path(path)
        directory = generations.current(path)
        db = _open_db(directory)
        generations.collect_garbage(path)  # after the open: its LOCK keeps a second process out
        with _damage_reported(directory):
            try:
                return cls(db, path, directory, wal=wal, sync=sync, dedup_window=dedup_window)  # reads
            except BaseException:
                db.close()
                raise

    @classmethod
    def restore(cls, checkpoint: str | os.PathLike[str], path: str | os.PathLike[str], *,
                wal: bool = True, sync: bool = False,
                dedup_window: int = DEDUP_WINDOW) -> Store:
        """Replace the store at ``path`` (which must be closed) by a copy of ``checkpoint``.

        The copy goes into the next generation, fsynced, and is opened and format-checked before
        the pointer moves to it; ``checkpoint`` itself is left untouched.
        """
        path = Path(path)
        target = generations.next_generation(path)
        try:
            for name in sorted(os.listdir(checkpoint)):
                with open(Path(checkpoint) / name, "rb") as content:
                    generations.fill(target, [(name, content)])
            _open_db(target, existing=True).close()
        except BaseException:
            generations.remove(target)
            raise
        generations.switch(path, target)
        return cls.open(path, wal=wal, sync=sync, dedup_window=dedup_window)

    @property
    def directory(self) -> Path:
        """The current generation directory (``path`` or ``path.N``)."""
        handle = self._handle
        if handle is None:
            raise StoreError(f"store at {self.path} is closed")
        return handle.directory

    def close(self) -> None:
        """Close the store; reads still in progress finish first. Unusable afterwards."""
        with self._handles:
            handle, self._handle = self._handle, None
            if handle is None:
                return
            handle.retired = True
            idle = handle.readers == 0
        if idle:
            handle.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- reads: a lease on the current handle -----------------------------------------------------

    def _reading(self) -> _Reading:
        return _Reading(self)

    def _enter(self) -> _Handle:
        with self._handles:
            handle = self._handle
            if handle is None:
                raise StoreError(f"store at {self.path} is closed")
            handle.readers += 1
        return handle

    def _leave(self, handle: _Handle) -> None:
        with self._handles:
            handle.readers -= 1
            last = handle.retired and handle.readers == 0
        if last:
            handle.dispose()

    # -- the writer thread ------------------------------------------------------------------------

    def last_applied(self) -> int:
        """The Raft index of the last committed batch (0 for a new store)."""
        return self._last_applied

    def batch(self, raft_index: int) -> Batch:
        """A batch for the entry at ``raft_index``; AlreadyApplied if that is not past
        ``last_applied`` (the caller skips such entries when the journal replays them)."""
        if raft_index <= self._last_applied:
            raise AlreadyApplied(f"raft index {raft_index} <= last_applied {self._last_applied}")
        return Batch(self._db, raft_index, functools.partial(self._commit, self._db))

    def checkpoint(self, dest: str | os.PathLike[str]) -> int:
        """Write a RocksDB checkpoint (a memtable flush plus hard links) into ``dest``, which must
        not exist, and return the last_applied it holds. Any thread, while batches commit: RocksDB
        takes it at one point in time, and the index is read from the checkpoint itself."""
        with self._reading() as db:
            try:
                Checkpoint(db).create_checkpoint(str(dest))
            except Exception as exc:
                raise StoreError(f"cannot write checkpoint to {dest}: {exc}") from exc
        return _stored_last_applied(Path(dest))

    def snapshot(self) -> StoreSnapshot:
        """Make the store durable and take a checkpoint of it next to ``path``, to pack later.

        Any thread, while batches commit (Raft calls it on its snapshot thread): the snapshot
        holds at least every batch committed before the call. Called before Raft drops journal
        entries, so ``persist()`` runs first: no entry is dropped that only the WAL's page cache
        held. Discard the result when done with it.
        """
        self.persist()
        directory = generations.checkpoint_dir(self.path)
        try:
            index = self.checkpoint(directory)
        except BaseException:
            shutil.rmtree(directory.parent, ignore_errors=True)
            raise
        return StoreSnapshot(directory, index)

    def install(self, source: BinaryIO) -> int:
        """Replace the whole state by the snapshot in ``source`` (``StoreSnapshot.write_to``'s
        stream) and return its last_applied. Writer thread, with no batch open.

        The snapshot is unpacked into the next generation, every file and the directory fsynced,
        opened and format-checked; only then does the pointer move (the commit point) and do
        commits and new reads go to it. The old generation is closed and deleted once the last
        read inside it ends. On any error before the pointer moves the store is left as it was.
        """
        target = generations.next_generation(self.path)
        try:
            generations.fill(target, _checkpoint_files(source))
            db = _open_db(target, existing=True)
        except BaseException:
            generations.remove(target)
            raise
        try:
            generations.switch(self.path, target)
        except BaseException:
            db.close()
            generations.remove(target)
            raise
        with self._lock, self._handles:
            old = self._handle
            self._use(_Handle(db, target))
            if old is None:  # closed meanwhile: nothing to retire
                idle = False
            else:
                old.retired = old.remove = True
                idle = old.readers == 0
        if idle:
            assert old is not None
            old.dispose()
        return self._last_applied

    def persist(self) -> None:
        """Make every committed batch survive a power loss (fsync the WAL, or flush memtables
        when the WAL is off). Call before the journal drops entries up to last_applied. Any thread."""
        with self._reading() as db:
            if self._wal:
                db.flush_wal(True)
            else:
                db.flush(True)

    def _commit(self, db: Rdict, wb: WriteBatch, raft_index: int, fresh_dedup: set[bytes]) -> None:
        with self._lock:
            if db is not self._db:
                raise StoreError("a batch begun before a snapshot install cannot commit after it")
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


def _stored_last_applied(directory: Path) -> int:
    """The last_applied of the (closed) RocksDB in ``directory``."""
    try:
        db = Rdict(str(directory), _options(), access_type=AccessType.read_only())
    except Exception as exc:
        raise StoreError(f"cannot read checkpoint at {directory}: {exc}") from exc
    try:
        raw = db.get(keys.LAST_APPLIED_KEY)
    finally:
        db.close()
    return 0 if raw is None else codecs.decode_u64(raw)


def _check_format(db: Rdict, path: Path, *, stamp: bool = True) -> None:
    """Stamp a new store with FORMAT_VERSION (if ``stamp``); refuse a store of another version
    or origin."""
    raw = db.get(keys.FORMAT_KEY)
    if raw is None:
        if not stamp:
            raise StoreFormatError(f"{path} holds no mq9cluster format version: not a snapshot "
                                   "or checkpoint of an mq9cluster store")
        if next(iter(db.keys()), None) is not None:  # a new store is stamped before its first write
            raise StoreCorrupt(f"{path} holds a RocksDB with data but without an mq9cluster format "
                               "version: damaged (its stamp lost), or not an mq9cluster store")
        db.put(keys.FORMAT_KEY, codecs.encode_u64(keys.FORMAT_VERSION))
        return
    version = codecs.decode_u64(raw)
    if version != keys.FORMAT_VERSION:
        raise StoreFormatError(f"store at {path} has format version {version}; this build reads "
                               f"only version {keys.FORMAT_VERSION}. Restore a snapshot made by "
                               "this version, or run the matching mq9cluster release")
