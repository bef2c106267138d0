"""File damage (chaos/corrupt.py) and the power-loss undo log (chaos/powerfs.py), on plain files."""

from __future__ import annotations

import os
import random
from pathlib import Path

from chaos import corrupt
from chaos.powerfs import PAGE, UndoLog


def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "raft").mkdir(parents=True)
    (root / "store").mkdir()
    (root / "raft" / "journal").write_bytes(bytes(range(256)) * 64)
    (root / "raft" / "journal.meta").write_bytes(b"MQ9M" + b"x" * 40)
    (root / "store" / "000007.sst").write_bytes(b"s" * 9000)
    (root / "store" / "000009.log").write_bytes(b"w" * 100)
    (root / "store" / "MANIFEST-000005").write_bytes(b"m" * 300)
    return root


def test_every_kind_finds_its_files(tmp_path: Path) -> None:
    root = data_dir(tmp_path)
    found = {kind: [str(p.relative_to(root)) for p in corrupt.files_of(root, kind)] for kind in corrupt.KINDS}
    assert found == {"journal": ["raft/journal"], "meta": ["raft/journal.meta"], "snapshot": [],
                     "sst": ["store/000007.sst"], "wal": ["store/000009.log"], "manifest": ["store/MANIFEST-000005"]}


def test_bitflip_changes_only_the_bits_it_reports(tmp_path: Path) -> None:
    root = data_dir(tmp_path)
    before = (root / "raft" / "journal").read_bytes()
    done = corrupt.damage(root, "journal", "bitflip", random.Random(3))
    after = bytearray((root / "raft" / "journal").read_bytes())
    for offset, bit in reversed(done["flips"]):
        after[offset] ^= 1 << bit
    assert bytes(after) == before and done["file"] == "raft/journal"


def test_truncate_cuts_the_file_where_it_says(tmp_path: Path) -> None:
    root = data_dir(tmp_path)
    done = corrupt.damage(root, "sst", "truncate", random.Random(1))
    assert (root / "store" / "000007.sst").stat().st_size == done["to"] < done["from"] == 9000


def test_rollback_needs_an_older_copy_and_puts_its_bytes_back(tmp_path: Path) -> None:
    root = data_dir(tmp_path)
    assert corrupt.damage(root, "journal", "rollback", random.Random(1)) is None
    corrupt.keep_copy(root, tmp_path / "older")
    journal = root / "raft" / "journal"
    journal.write_bytes(journal.read_bytes() + b"new records")
    for seed in range(6):
        current = journal.read_bytes()
        done = corrupt.damage(root, "journal", "rollback", random.Random(seed), tmp_path / "older")
        if done is None:
            continue
        older = (tmp_path / "older" / "raft" / "journal").read_bytes()
        if done["kind_of"] == "tail":
            assert journal.read_bytes() == older
        else:
            assert journal.read_bytes() == current[:done["start"]] + older[done["start"]:done["end"]] + current[done["end"]:]


def write(log: UndoLog, path: Path, data: bytes, offset: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        log.before_change(path.name, fd, offset, offset + len(data))
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def test_power_loss_keeps_exactly_what_was_fsynced(tmp_path: Path) -> None:
    log = UndoLog()
    synced, fresh, other = tmp_path / "synced", tmp_path / "fresh", tmp_path / "other"
    synced.write_bytes(b"A" * (2 * PAGE + 10))
    write(log, synced, b"B" * 100, PAGE - 50)  # across a page boundary
    write(log, synced, b"C" * 5000, 2 * PAGE + 10)  # appended
    log.created(fresh.name)
    write(log, fresh, b"D" * 10, 0)
    other.write_bytes(b"E" * 10)
    write(log, other, b"F", 3)
    log.synced(other.name)  # fsynced: its change stays
    files, dropped = log.play_back(tmp_path)
    assert synced.read_bytes() == b"A" * (2 * PAGE + 10)
    assert fresh.read_bytes() == b""
    assert other.read_bytes() == b"EEEFEEEEEE"
    assert files == 2 and dropped > 5000


def test_a_renamed_file_keeps_its_undo_record(tmp_path: Path) -> None:
    log = UndoLog()
    log.created("tmp")
    (tmp_path / "tmp").write_bytes(b"")
    write(log, tmp_path / "tmp", b"snapshot", 0)
    (tmp_path / "tmp").rename(tmp_path / "final")
    log.renamed("tmp", "final")
    log.play_back(tmp_path)
    assert (tmp_path / "final").read_bytes() == b""  # renamed but never fsynced


def test_cleanup_finds_only_mounts_below_a_runs_directory() -> None:
    from chaos.cleanup import leftover_mounts

    info = "\n".join([
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
        "40 27 0:50 / /work/x/.chaos-runs/r1/nodes rw - ext4 /dev/vda rw",
        "41 40 0:51 / /work/x/.chaos-runs/r1/nodes/n1/data rw - fuse PowerLossFS rw",
        "42 27 0:52 / /work/other/data rw - fuse something rw",
    ])
    assert leftover_mounts(info) == ["/work/x/.chaos-runs/r1/nodes/n1/data", "/work/x/.chaos-runs/r1/nodes"]
