"""The durable Raft log: a pysyncobj ``Journal`` that fsyncs before it returns.

Owns the on-disk Raft log and Raft metadata of one node; touches nothing else (no RocksDB, no
snapshots: pysyncobj's dump file is the snapshot).

Files, for a pysyncobj ``journalFile`` of ``PATH``:

- ``PATH``: one append-only segment. A 12-byte file header (``FILE_MAGIC`` + format version),
  then records: ``RECORD`` header (magic, version, body length, idx, term, CRC32 of the body),
  CRC32 of those header bytes, then the body (the command bytes exactly as pysyncobj gave them).
- ``PATH.meta``: currentTerm, votedFor and raftCommitIndex as checksummed JSON, always replaced
  atomically (write temp, fsync, rename, fsync directory).

Durability: ``add()`` writes one record and ``fdatasync``s before returning, so neither a leader
nor a follower counts or acknowledges an entry that is not on disk. ``deleteEntriesFrom`` and
``clear`` truncate the file and ``fdatasync``; ``deleteEntriesTo`` (compaction) rewrites the kept
entries into a new segment, atomically. ``setCurrentTerm`` is durable before it returns (Raft
answers votes right after); ``setRaftCommitIndex`` is only a restart hint, written lazily by
``onOneSecondTimer`` and ``_destroy``. After a failed write or fsync the journal refuses every
further change (an fsync error cannot be retried safely): restart the node.

Recovery on open: records are checked one by one. A bad or truncated record with nothing valid
after it is a torn tail: the file is truncated there, fsynced, logged and described in
``recovery_report``. A bad record followed by a valid one, a break in the idx/term sequence, a
foreign file header, or a missing or unreadable metadata file next to an existing log is damage,
not a crash: ``JournalCorrupt`` is raised and nothing is served.

The seam: pysyncobj builds its journal by calling the module-level name ``createJournal`` in
``pysyncobj.syncobj``. ``install_durable_journal()`` rebinds that one name, process-wide; call it
before creating any ``SyncObj``. No other code patches pysyncobj.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import BinaryIO

from pysyncobj import syncobj as _syncobj
from pysyncobj.journal import Journal, MemoryJournal

from mq9cluster.errors import JournalCorrupt
from mq9cluster.metrics import FSYNC_SECONDS

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FILE_MAGIC = b"MQ9RAFTJ"
FILE_HEADER = FILE_MAGIC + struct.pack("<I", FORMAT_VERSION)
FILE_HEADER_SIZE = len(FILE_HEADER)
RECORD_MAGIC = b"MQ9R"
_RECORD = struct.Struct("<4sHIQQI")  # magic, version, body length, idx, term, body CRC32
_CRC = struct.Struct("<I")
RECORD_HEADER_SIZE = _RECORD.size + _CRC.size  # the header is followed by its own CRC32
META_MAGIC = b"MQ9M"
_META_HEADER = struct.Struct("<4sHI")  # magic, version, CRC32 of the JSON body
DEFAULT_COMMIT_INDEX = 1  # what pysyncobj's own journals report before any commit

Entry = tuple[bytes, int, int]  # (command, idx, term), as pysyncobj indexes it


@dataclass(frozen=True)
class RecoveryReport:
    """What opening the journal found: records kept, and the torn tail dropped, if any."""

    records: int
    truncated_at: int | None = None
    dropped_bytes: int = 0
    reason: str = ""


@dataclass
class _Meta:
    current_term: int = 0
    voted_for: str | None = None
    commit_index: int = DEFAULT_COMMIT_INDEX


def encode_record(command: bytes, idx: int, term: int) -> bytes:
    """One log record: checksummed header, then the command bytes."""
    head = _RECORD.pack(RECORD_MAGIC, FORMAT_VERSION, len(command), idx, term, zlib.crc32(command))
    return b"".join((head, _CRC.pack(zlib.crc32(head)), command))


def _decode_header(raw: bytes) -> tuple[int, int, int, int] | None:
    """(body length, idx, term, body CRC) of a record header, or None if it is not a valid one."""
    if len(raw) < RECORD_HEADER_SIZE:
        return None
    head = raw[: _RECORD.size]
    if zlib.crc32(head) != _CRC.unpack_from(raw, _RECORD.size)[0]:
        return None
    magic, version, length, idx, term, body_crc = _RECORD.unpack(head)
    if magic != RECORD_MAGIC or version != FORMAT_VERSION:
        return None
    return length, idx, term, body_crc


def _valid_record_after(data: bytes, base: int) -> int | None:
    """File offset of the first complete, valid record inside ``data`` (read at ``base``)."""
    pos = data.find(RECORD_MAGIC)
    while pos != -1:
        header = _decode_header(data[pos : pos + RECORD_HEADER_SIZE])
        if header is not None:
            length, _, _, body_crc = header
            body = data[pos + RECORD_HEADER_SIZE : pos + RECORD_HEADER_SIZE + length]
            if len(body) == length and zlib.crc32(body) == body_crc:
                return base + pos
        pos = data.find(RECORD_MAGIC, pos + 1)
    return None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: str, chunks: list[bytes]) -> None:
    """Replace ``path`` by ``chunks``: write a temp file, fsync, rename, fsync the directory."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def _encode_meta(meta: _Meta) -> bytes:
    body = json.dumps(asdict(meta)).encode()
    return _META_HEADER.pack(META_MAGIC, FORMAT_VERSION, zlib.crc32(body)) + body


def _decode_meta(path: str, data: bytes) -> _Meta:
    """Parse the metadata file; any damage raises JournalCorrupt (it is replaced atomically)."""
    if len(data) < _META_HEADER.size:
        raise JournalCorrupt(f"{path}: metadata file is {len(data)} bytes, too short")
    magic, version, crc = _META_HEADER.unpack_from(data)
    body = data[_META_HEADER.size :]
    if magic != META_MAGIC or version != FORMAT_VERSION:
        raise JournalCorrupt(f"{path}: not an mq9 Raft metadata file ({magic!r}, version {version})")
    if zlib.crc32(body) != crc:
        raise JournalCorrupt(f"{path}: metadata checksum mismatch")
    try:
        meta = _Meta(**json.loads(body))
    except (ValueError, TypeError) as exc:
        raise JournalCorrupt(f"{path}: metadata unreadable: {exc}") from exc
    if not (
        type(meta.current_term) is int
        and type(meta.commit_index) is int
        and (meta.voted_for is None or isinstance(meta.voted_for, str))
    ):
        raise JournalCorrupt(f"{path}: metadata fields have wrong types: {meta!r}")
    return meta


class DurableJournal(Journal):
    """pysyncobj's Raft log on disk, every change durable before the call returns."""

    def __init__(self, path: str) -> None:
        self._path = os.path.abspath(path)
        self._meta_path = self._path + ".meta"
        self._entries: list[Entry] = []
        self._offsets: list[int] = []  # file offset of each entry's record
        self._meta_dirty = False
        self._failure: OSError | None = None
        for stale in (self._path + ".tmp", self._meta_path + ".tmp"):
            if os.path.exists(stale):  # an interrupted atomic replace; the original is intact
                os.unlink(stale)
        meta = self._load_meta()
        if not os.path.exists(self._path) or os.path.getsize(self._path) == 0:
            self._meta = meta or _Meta()
            if meta is None:
                self._store_meta()  # before the log exists: a log without metadata is damage
            _write_atomically(self._path, [FILE_HEADER])
            self.recovery_report = RecoveryReport(records=0)
        else:
            if meta is None:
                raise JournalCorrupt(
                    f"{self._meta_path} is missing but the log {self._path} exists: "
                    "the Raft term and vote are lost, refusing to start"
                )
            self._meta = meta
            self.recovery_report = self._recover()
        self._end = self._offsets_end()
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
        self._clamp_commit_index()

    # -- opening --------------------------------------------------------------------------------

    def _load_meta(self) -> _Meta | None:
        try:
            with open(self._meta_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        return _decode_meta(self._meta_path, data)

    def _recover(self) -> RecoveryReport:
        """Read every record, truncate a torn tail, raise JournalCorrupt on any other damage."""
        size = os.path.getsize(self._path)
        with open(self._path, "rb") as f:
            head = f.read(FILE_HEADER_SIZE)
            if head != FILE_HEADER:
                raise JournalCorrupt(
                    f"{self._path}: not an mq9 Raft log of format {FORMAT_VERSION} (header {head!r})"
                )
            damage = self._read_records(f, size)
        if damage is None:
            return RecoveryReport(records=len(self._entries))
        offset, reason = damage
        logger.warning(
            "raft log %s: torn tail at offset %d (%s); dropping %d bytes, keeping %d records",
            self._path, offset, reason, size - offset, len(self._entries),
        )
        with open(self._path, "r+b") as f:
            f.truncate(offset)
            f.flush()
            os.fsync(f.fileno())
        return RecoveryReport(len(self._entries), offset, size - offset, reason)

    def _read_records(self, f: BinaryIO, size: int) -> tuple[int, str] | None:
        """Load records into memory; return (offset, reason) of a torn tail, if any."""
        offset = FILE_HEADER_SIZE
        while offset < size:
            raw = f.read(RECORD_HEADER_SIZE)
            header = _decode_header(raw)
            if header is None:
                reason = "bad record header" if len(raw) == RECORD_HEADER_SIZE else "truncated record header"
                return self._tail_damage(f, offset, offset + 1, reason)
            length, idx, term, body_crc = header
            end = offset + RECORD_HEADER_SIZE + length
            if end > size:
                return offset, "truncated record body"
            body = f.read(length)
            if zlib.crc32(body) != body_crc:
                return self._tail_damage(f, offset, end, "record body checksum mismatch")
            if self._entries and (idx != self._entries[-1][1] + 1 or term < self._entries[-1][2]):
                prev = self._entries[-1]
                raise JournalCorrupt(
                    f"{self._path}: record at offset {offset} (idx {idx}, term {term}) "
                    f"does not follow idx {prev[1]}, term {prev[2]}"
                )
            self._entries.append((body, idx, term))
            self._offsets.append(offset)
            offset = end
        return None

    def _tail_damage(self, f: BinaryIO, offset: int, resume: int, reason: str) -> tuple[int, str]:
        """Accept damage at ``offset`` as a torn tail only if no valid record follows it."""
        f.seek(resume)
        found = _valid_record_after(f.read(), resume)
        if found is not None:
            raise JournalCorrupt(
                f"{self._path}: {reason} at offset {offset} is followed by a valid record at "
                f"offset {found}: the log is damaged in the middle, not torn at its tail"
            )
        return offset, reason

    def _offsets_end(self) -> int:
        if not self._entries:
            return FILE_HEADER_SIZE
        return self._offsets[-1] + RECORD_HEADER_SIZE + len(self._entries[-1][0])

    def _clamp_commit_index(self) -> None:
        if self._entries and self._meta.commit_index > self._entries[-1][1]:
            logger.warning(
                "raft log %s: stored commit index %d is past the last entry %d; using %d",
                self._path, self._meta.commit_index, self._entries[-1][1], self._entries[-1][1],
            )
            self._meta.commit_index = self._entries[-1][1]
            self._meta_dirty = True

    # -- writing --------------------------------------------------------------------------------

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Guard a disk change: after any OSError the journal refuses every further change."""
        if self._failure is not None:
            raise OSError(f"raft log {self._path} failed earlier; restart the node") from self._failure
        try:
            yield
        except OSError as exc:
            self._failure = exc
            raise

    def _store_meta(self) -> None:
        with self._changing():
            _write_atomically(self._meta_path, [_encode_meta(self._meta)])
        self._meta_dirty = False

    def _truncate(self, position: int) -> None:
        """Durably drop the entries from list position ``position`` on."""
        offset = self._offsets[position] if position < len(self._offsets) else self._end
        with self._changing():
            os.ftruncate(self._fd, offset)
            os.fdatasync(self._fd)
        del self._entries[position:]
        del self._offsets[position:]
        self._end = offset

    # -- the pysyncobj Journal interface ----------------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        """Append one entry and fdatasync it; returns only once the entry is on disk."""
        if not isinstance(command, bytes):
            raise TypeError(f"raft log commands are bytes, got {type(command).__name__}")
        if self._entries and (idx != self._entries[-1][1] + 1 or term < self._entries[-1][2]):
            raise ValueError(f"entry ({idx}, {term}) does not follow {self._entries[-1][1:]}")
        record = encode_record(command, idx, term)
        with self._changing(), FSYNC_SECONDS.time():
            written = 0
            while written < len(record):
                written += os.write(self._fd, record[written:])
            os.fdatasync(self._fd)
        self._entries.append((command, idx, term))
        self._offsets.append(self._end)
        self._end += len(record)

    def clear(self) -> None:
        """Durably drop every entry."""
        self._truncate(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Durably drop the entries from list position ``entryFrom`` on (Raft conflict)."""
        if entryFrom < len(self._entries):
            self._truncate(entryFrom)

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Keep entries from list position ``entryTo`` on, in a new segment that replaces the old."""
        if entryTo <= 0:
            return
        kept = self._entries[entryTo:]
        records = [encode_record(*entry) for entry in kept]
        with self._changing():
            _write_atomically(self._path, [FILE_HEADER, *records])
            os.close(self._fd)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
        self._entries = kept
        self._offsets = []
        offset = FILE_HEADER_SIZE
        for record in records:
            self._offsets.append(offset)
            offset += len(record)
        self._end = offset

    def __getitem__(self, item: int | slice) -> Entry | list[Entry]:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        """Write a pending commit index and close the log file."""
        if self._fd < 0:
            return
        if self._meta_dirty and self._failure is None:
            self._store_meta()
        os.close(self._fd)
        self._fd = -1

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        """Remember the commit index; it is a restart hint, stored within a second (lazily)."""
        if raftCommitIndex != self._meta.commit_index:
            self._meta.commit_index = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        return self._meta.commit_index

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:
        """Store term and vote durably before returning (Raft sends the vote right after)."""
        self._meta.current_term = term
        self._meta.voted_for = votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return self._meta.current_term

    def getVotedForNodeId(self) -> str | None:
        return self._meta.voted_for

    def onOneSecondTimer(self) -> None:
        """Store the commit index if it changed since the last store."""
        if self._meta_dirty and self._failure is None:
            self._store_meta()


def create_journal(journal_file: str | None) -> Journal:
    """pysyncobj's journal factory: a DurableJournal for a file, pysyncobj's MemoryJournal for None."""
    if journal_file is None:
        return MemoryJournal()
    return DurableJournal(journal_file)


def install_durable_journal() -> None:
    """Make every SyncObj created from now on keep its Raft log in a DurableJournal.

    Rebinds ``pysyncobj.syncobj.createJournal``, the one name SyncObj calls to build its journal.
    Idempotent; process-wide.
    """
    if not callable(getattr(_syncobj, "createJournal", None)):
        raise RuntimeError("pysyncobj.syncobj.createJournal is gone: the journal seam moved")
    _syncobj.createJournal = create_journal
