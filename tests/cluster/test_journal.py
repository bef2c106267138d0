"""DurableJournal on real files: round trips, torn tails, corruption, metadata, and pysyncobj on top."""

from __future__ import annotations

import os
import random
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pysyncobj import SyncObj, SyncObjConf, replicated, syncobj
from pysyncobj.journal import FileJournal

from mq9cluster.cluster.journal import (
    FILE_HEADER_SIZE,
    RECORD_HEADER_SIZE,
    DurableJournal,
    JournalCorrupt,
    encode_record,
    install_durable_journal,
)

Entries = list[tuple[bytes, int, int]]


def make_entries(count: int, seed: int = 7) -> Entries:
    """Entries as pysyncobj writes them: contiguous idx from 1, non-decreasing terms, any bytes."""
    rng = random.Random(seed)
    return [(rng.randbytes(rng.randrange(0, 200)), idx, 1 + idx // 4) for idx in range(1, count + 1)]


def record_spans(entries: Entries) -> list[tuple[int, int]]:
    """(start, end) file offsets of each entry's record."""
    spans, offset = [], FILE_HEADER_SIZE
    for command, _, _ in entries:
        end = offset + RECORD_HEADER_SIZE + len(command)
        spans.append((offset, end))
        offset = end
    return spans


def write_journal(path: Path, entries: Entries) -> None:
    journal = DurableJournal(str(path))
    for entry in entries:
        journal.add(*entry)
    journal._destroy()


def reopen(path: Path) -> DurableJournal:
    return DurableJournal(str(path))


def copy_cut(src: Path, dst_dir: Path, size: int) -> Path:
    """Copy the journal and its metadata to ``dst_dir``, the journal cut to ``size`` bytes."""
    dst_dir.mkdir(exist_ok=True)
    dst = dst_dir / src.name
    dst.write_bytes(src.read_bytes()[:size])
    shutil.copy(str(src) + ".meta", str(dst) + ".meta")
    return dst


def flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "raft.journal"


def test_entries_survive_reopen_exactly(log_path: Path) -> None:
    entries = make_entries(50)
    write_journal(log_path, entries)
    journal = reopen(log_path)
    assert list(journal[:]) == entries
    assert len(journal) == 50 and journal[-1] == entries[-1] and journal[3:5] == entries[3:5]
    assert all(type(command) is bytes for command, _, _ in journal[:])
    assert journal.recovery_report.records == 50 and journal.recovery_report.truncated_at is None


def test_missing_file_starts_an_empty_log(log_path: Path) -> None:
    journal = DurableJournal(str(log_path))
    assert len(journal) == 0 and journal.getCurrentTerm() == 0 and journal.getVotedForNodeId() is None
    journal.add(b"\x00", 1, 0)
    journal._destroy()
    assert reopen(log_path)[:] == [(b"\x00", 1, 0)]


@pytest.mark.parametrize("with_meta", [False, True])
def test_empty_file_starts_an_empty_log(log_path: Path, with_meta: bool) -> None:
    if with_meta:
        DurableJournal(str(log_path)).setCurrentTerm(4, "n1")
    log_path.write_bytes(b"")
    journal = DurableJournal(str(log_path))
    assert len(journal) == 0
    assert journal.getCurrentTerm() == (4 if with_meta else 0)
    journal.add(b"x", 1, 0)
    assert reopen(log_path)[:] == [(b"x", 1, 0)]


def test_cut_anywhere_in_last_record_keeps_the_rest(log_path: Path, tmp_path: Path) -> None:
    entries = make_entries(6)
    write_journal(log_path, entries)
    start, end = record_spans(entries)[-1]
    for cut in range(start + 1, end):
        journal = reopen(copy_cut(log_path, tmp_path / f"cut{cut}", cut))
        assert journal[:] == entries[:-1], cut
        report = journal.recovery_report
        assert (report.records, report.truncated_at, report.dropped_bytes) == (5, start, cut - start)
        assert report.reason.startswith("truncated record")
        assert reopen(tmp_path / f"cut{cut}" / log_path.name).recovery_report.truncated_at is None


def test_truncated_tail_is_logged(log_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    entries = make_entries(3)
    write_journal(log_path, entries)
    start, end = record_spans(entries)[-1]
    with open(log_path, "r+b") as f:
        f.truncate(end - 1)
    reopen(log_path)
    assert f"torn tail at offset {start}" in caplog.text
    assert log_path.stat().st_size == start


@pytest.mark.parametrize("where", [0, 5, 12, RECORD_HEADER_SIZE - 1, RECORD_HEADER_SIZE, -1])
def test_bit_flip_in_last_record_drops_it(log_path: Path, where: int) -> None:
    entries = make_entries(5)
    entries[-1] = (b"last command body", 5, 2)
    write_journal(log_path, entries)
    start, end = record_spans(entries)[-1]
    flip_bit(log_path, start + where if where >= 0 else end + where)
    journal = reopen(log_path)
    assert journal[:] == entries[:-1]
    assert journal.recovery_report.truncated_at == start
    assert journal.recovery_report.dropped_bytes == end - start


@pytest.mark.parametrize("where", [0, 9, RECORD_HEADER_SIZE - 2, RECORD_HEADER_SIZE + 1])
def test_bit_flip_in_a_middle_record_refuses_to_start(log_path: Path, where: int) -> None:
    entries = [(b"command %d" % idx, idx, 1) for idx in range(1, 6)]
    write_journal(log_path, entries)
    size = log_path.stat().st_size
    flip_bit(log_path, record_spans(entries)[2][0] + where)
    with pytest.raises(JournalCorrupt, match="damaged in the middle"):
        reopen(log_path)
    assert log_path.stat().st_size == size  # nothing was truncated


def test_gap_in_idx_sequence_refuses_to_start(log_path: Path) -> None:
    write_journal(log_path, [])
    with open(log_path, "ab") as f:
        f.write(encode_record(b"a", 1, 1) + encode_record(b"b", 3, 1))
    with pytest.raises(JournalCorrupt, match="does not follow idx 1"):
        reopen(log_path)


def test_foreign_journal_file_refuses_to_start(log_path: Path) -> None:
    write_journal(log_path, [])
    log_path.write_bytes(b"PYSYNCOBJ" + b"\0" * 60)
    with pytest.raises(JournalCorrupt, match="not an mq9 Raft log"):
        reopen(log_path)


def test_pysyncobj_file_journal_is_not_mistaken_for_ours(log_path: Path) -> None:
    old = FileJournal(str(log_path))
    old.add(b"x", 1, 1)
    old.setCurrentTerm(1, None)
    old._destroy()
    with pytest.raises(JournalCorrupt):
        reopen(log_path)


def test_add_refuses_what_would_break_the_log(log_path: Path) -> None:
    journal = DurableJournal(str(log_path))
    journal.add(b"a", 1, 2)
    with pytest.raises(ValueError):
        journal.add(b"b", 3, 2)
    with pytest.raises(ValueError):
        journal.add(b"b", 2, 1)
    with pytest.raises(TypeError):
        journal.add("text", 2, 2)  # type: ignore[arg-type]
    assert reopen(log_path)[:] == [(b"a", 1, 2)]


def test_after_a_failed_write_the_journal_takes_no_more_changes(log_path: Path) -> None:
    journal = DurableJournal(str(log_path))
    journal.add(b"a", 1, 1)
    os.close(journal._fd)  # the next write fails as a dying disk would make it fail
    with pytest.raises(OSError):
        journal.add(b"b", 2, 1)
    journal._fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    with pytest.raises(OSError, match="failed earlier"):
        journal.add(b"b", 2, 1)
    with pytest.raises(OSError, match="failed earlier"):
        journal.setCurrentTerm(2, None)
    assert journal[:] == [(b"a", 1, 1)] and reopen(log_path)[:] == [(b"a", 1, 1)]


def test_delete_entries_from_is_durable(log_path: Path) -> None:
    entries = make_entries(10)
    journal = DurableJournal(str(log_path))
    for entry in entries:
        journal.add(*entry)
    journal.deleteEntriesFrom(6)
    journal.deleteEntriesFrom(99)
    journal.add(b"new leader's entry", 7, 9)
    expected = entries[:6] + [(b"new leader's entry", 7, 9)]
    assert journal[:] == expected
    assert reopen(log_path)[:] == expected  # journal never closed: as after a crash


def test_clear_is_durable(log_path: Path) -> None:
    journal = DurableJournal(str(log_path))
    for entry in make_entries(4):
        journal.add(*entry)
    journal.clear()
    journal.add(b"snapshot entry", 40, 3)
    assert reopen(log_path)[:] == [(b"snapshot entry", 40, 3)]


def test_delete_entries_to_compacts_durably(log_path: Path) -> None:
    entries = make_entries(30)
    journal = DurableJournal(str(log_path))
    for entry in entries:
        journal.add(*entry)
    size_before = log_path.stat().st_size
    journal.deleteEntriesTo(25)
    journal.deleteEntriesTo(0)
    assert journal[:] == entries[25:] and log_path.stat().st_size < size_before
    assert reopen(log_path)[:] == entries[25:]
    journal.add(b"after compaction", 31, 9)
    journal.deleteEntriesFrom(3)  # truncation offsets still right after the rewrite
    assert reopen(log_path)[:] == entries[25:28]


def test_leftover_compaction_temp_file_is_ignored(log_path: Path) -> None:
    entries = make_entries(5)
    write_journal(log_path, entries)
    temp = Path(str(log_path) + ".tmp")
    temp.write_bytes(b"half a rewritten segment")
    assert reopen(log_path)[:] == entries
    assert not temp.exists()


def test_current_term_and_vote_are_durable_at_once(log_path: Path) -> None:
    journal = DurableJournal(str(log_path))
    journal.setCurrentTerm(7, "127.0.0.1:4001")
    again = reopen(log_path)  # the first one is never closed: as after a crash
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (7, "127.0.0.1:4001")
    journal.setCurrentTerm(8, None)
    assert (reopen(log_path).getCurrentTerm(), reopen(log_path).getVotedForNodeId()) == (8, None)


def test_leftover_metadata_temp_file_is_ignored(log_path: Path) -> None:
    journal = DurableJournal(str(log_path))
    journal.setCurrentTerm(3, "a")
    temp = Path(str(log_path) + ".meta.tmp")
    temp.write_bytes(b"MQ9M\x01\x00garbage of an interrupted replace")
    again = reopen(log_path)
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (3, "a")
    assert not temp.exists()


def test_commit_index_is_written_lazily(log_path: Path) -> None:
    journal = DurableJournal(str(log_path))
    for entry in make_entries(5):
        journal.add(*entry)
    journal.setRaftCommitIndex(4)
    assert reopen(log_path).getRaftCommitIndex() == 1
    journal.onOneSecondTimer()
    assert reopen(log_path).getRaftCommitIndex() == 4
    journal.setRaftCommitIndex(5)
    journal._destroy()
    assert reopen(log_path).getRaftCommitIndex() == 5


def test_commit_index_past_the_log_end_is_clamped(log_path: Path) -> None:
    journal = DurableJournal(str(log_path))
    for entry in make_entries(5):
        journal.add(*entry)
    journal.setRaftCommitIndex(5)
    journal.deleteEntriesFrom(2)
    journal.onOneSecondTimer()
    assert reopen(log_path).getRaftCommitIndex() == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-1],
        lambda data: data[:3],
        lambda data: data[:10] + bytes([data[10] ^ 1]) + data[11:],
        lambda data: b"\x80\x02}q\x00."  # a pickle, as pysyncobj's own metadata file
    ],
)
def test_damaged_metadata_refuses_to_start(log_path: Path, damage: Callable[[bytes], bytes]) -> None:
    journal = DurableJournal(str(log_path))
    journal.setCurrentTerm(2, "b")
    meta = Path(str(log_path) + ".meta")
    meta.write_bytes(damage(meta.read_bytes()))
    with pytest.raises(JournalCorrupt, match="meta"):
        reopen(log_path)


def test_missing_metadata_next_to_a_log_refuses_to_start(log_path: Path) -> None:
    write_journal(log_path, make_entries(3))
    Path(str(log_path) + ".meta").unlink()
    with pytest.raises(JournalCorrupt, match="missing"):
        reopen(log_path)


def test_power_loss_at_random_points_keeps_a_clean_prefix(log_path: Path, tmp_path: Path) -> None:
    entries = make_entries(200, seed=11)
    write_journal(log_path, entries)
    ends = [end for _, end in record_spans(entries)]
    rng = random.Random(2024)
    for trial in range(40):
        cut = rng.randrange(FILE_HEADER_SIZE, log_path.stat().st_size + 1)
        journal = reopen(copy_cut(log_path, tmp_path / f"loss{trial}", cut))
        kept = sum(1 for end in ends if end <= cut)
        assert journal[:] == entries[:kept], cut
        assert journal.recovery_report.dropped_bytes == cut - (ends[kept - 1] if kept else FILE_HEADER_SIZE)
        after = (b"written after recovery", kept + 1, 99)
        journal.add(*after)
        journal._destroy()
        assert reopen(tmp_path / f"loss{trial}" / log_path.name)[-1] == after


# -- pysyncobj through the seam ------------------------------------------------------------------


class Counter(SyncObj):
    """A tiny replicated state machine."""

    def __init__(self, self_node: str, others: list[str], journal_file: Path, **conf: object) -> None:
        super().__init__(self_node, others, SyncObjConf(journalFile=str(journal_file), **conf))
        self.value = 0

    @replicated
    def add(self, amount: int) -> int:
        self.value += amount
        return self.value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tick_until(node: Counter, done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "condition not reached in time"
        node.doTick(0.005)


@pytest.fixture
def durable_seam(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(syncobj, "createJournal", syncobj.createJournal)  # restored afterwards
    install_durable_journal()
    yield


FAST = {"raftMinTimeout": 0.05, "raftMaxTimeout": 0.1, "appendEntriesPeriod": 0.01}


@pytest.mark.usefixtures("durable_seam")
def test_single_node_recovers_its_log_after_restart_and_crash(tmp_path: Path) -> None:
    addr, journal_file = f"127.0.0.1:{free_port()}", tmp_path / "node.journal"
    node = Counter(addr, [], journal_file, autoTick=False, **FAST)
    assert isinstance(node._SyncObj__raftLog, DurableJournal)  # type: ignore[attr-defined]
    tick_until(node, node._isLeader)
    results: list[object] = []
    for _ in range(10):
        node.add(3, callback=lambda res, err: results.append(res))
    tick_until(node, lambda: len(results) == 10)
    assert node.value == 30
    crashed = tmp_path / "crash"  # the disk as it is now, with the node still running
    crashed.mkdir()
    shutil.copy(journal_file, crashed / journal_file.name)
    shutil.copy(str(journal_file) + ".meta", crashed)
    node.destroy()

    restarted = Counter(addr, [], journal_file, autoTick=False, **FAST)
    tick_until(restarted, lambda: restarted._isLeader() and restarted.value == 30)
    assert restarted.getStatus()["log_len"] >= 12  # no-op, ten adds, the new no-op
    restarted.destroy()

    from_crash = Counter(f"127.0.0.1:{free_port()}", [], crashed / journal_file.name, autoTick=False, **FAST)
    tick_until(from_crash, lambda: from_crash._isLeader() and from_crash.value == 30)
    from_crash.destroy()


@pytest.mark.usefixtures("durable_seam")
def test_single_node_compacts_its_log_and_restarts_from_snapshot_and_log(tmp_path: Path) -> None:
    addr, journal_file = f"127.0.0.1:{free_port()}", tmp_path / "node.journal"
    conf = {**FAST, "autoTick": False, "fullDumpFile": str(tmp_path / "dump"), "useFork": False,
            "logCompactionMinEntries": 8}
    node = Counter(addr, [], journal_file, **conf)
    tick_until(node, node._isLeader)
    results: list[object] = []
    for _ in range(20):
        node.add(1, callback=lambda res, err: results.append(res))
        tick_until(node, lambda: len(results) == node.value)
    tick_until(node, lambda: node.getStatus()["log_len"] < 8)
    node.add(1, callback=lambda res, err: results.append(res))
    tick_until(node, lambda: len(results) == 21)
    kept = node.getStatus()["log_len"]
    node.destroy()
    assert len(reopen(journal_file)) == kept

    restarted = Counter(addr, [], journal_file, **conf)
    tick_until(restarted, lambda: restarted._isLeader() and restarted.value == 21)
    restarted.destroy()


@pytest.mark.usefixtures("durable_seam")
def test_three_nodes_restarted_together_keep_the_committed_log(tmp_path: Path) -> None:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]

    def start() -> list[Counter]:
        return [Counter(a, [o for o in addrs if o != a], tmp_path / f"{a}.journal") for a in addrs]

    def wait(nodes: list[Counter], done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 20
        while not done():
            assert time.monotonic() < deadline, [n.getStatus()["state"] for n in nodes]
            time.sleep(0.02)

    nodes = start()
    try:
        wait(nodes, lambda: any(n._isLeader() for n in nodes))
        leader = next(n for n in nodes if n._isLeader())
        for _ in range(20):
            leader.add(1, sync=True, timeout=10)
        wait(nodes, lambda: all(n.value == 20 for n in nodes))
    finally:
        for n in nodes:
            n.destroy_synchronous()
    nodes = start()
    try:
        wait(nodes, lambda: all(n.value == 20 for n in nodes))
        assert all(n._getTerm() >= 1 for n in nodes)
    finally:
        for n in nodes:
            n.destroy_synchronous()
