"""The files side of a self-rebuild on a real directory: the marker, damaged copies, what is kept."""

from __future__ import annotations

from pathlib import Path

from mq9cluster.cluster import rebuild
from mq9cluster.mailbox import ops
from mq9cluster.mailbox.machine import MailboxMachine
from mq9cluster.store import Store
from mq9cluster.errors import ClusterAdminError, JournalCorrupt, SnapshotCorrupt, StoreCorrupt, StoreError


def _data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "raft").mkdir(parents=True)
    (data / "raft" / "journal").write_bytes(b"damaged")
    (data / "store").mkdir()
    (data / "store" / "CURRENT").write_text("MANIFEST-000005\n")
    return data


def test_the_damaged_files_are_moved_aside_behind_a_marker(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    assert rebuild.pending(data) is None
    moved = rebuild.set_aside(data, "journal: bad record")
    assert moved is not None and moved.parent == data and moved.name.startswith("damaged-")
    assert (moved / "raft" / "journal").read_bytes() == b"damaged"
    assert sorted(p.name for p in data.iterdir()) == sorted([moved.name, rebuild.MARKER])
    assert rebuild.pending(data) == "journal: bad record"  # a restart now goes on with the rebuild
    rebuild.finish(data)
    assert rebuild.pending(data) is None and (moved / "store" / "CURRENT").exists()


def test_a_resumed_rebuild_keeps_its_first_reason_and_moves_what_it_had_fetched(tmp_path: Path) -> None:
    data = _data_dir(tmp_path)
    first = rebuild.set_aside(data, "journal: bad record")
    (data / "raft").mkdir()  # a join under way when the process died
    second = rebuild.set_aside(data, "ignored: the marker's reason stays")
    assert second is not None and second != first and (second / "raft").is_dir()
    assert rebuild.pending(data) == "journal: bad record"
    assert rebuild.set_aside(data, "again") is None  # nothing left to move


def test_the_first_and_the_newest_damaged_copies_are_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for n in range(5):
        (data / f"damaged-2026010{n}T000000Z").mkdir()
    (data / "raft").mkdir()
    newest = rebuild.set_aside(data, "meta: checksum")
    kept = sorted(p.name for p in data.iterdir() if p.name.startswith(rebuild.DAMAGED_PREFIX))
    assert kept == ["damaged-20260100T000000Z", "damaged-20260104T000000Z", newest.name]


def test_an_unreadable_marker_still_means_a_rebuild(tmp_path: Path) -> None:
    (tmp_path / rebuild.MARKER).write_bytes(b"\x00garbage")
    assert "unreadable" in rebuild.pending(tmp_path)


def test_only_damage_is_damage() -> None:
    assert rebuild.is_damage(JournalCorrupt("x")) and rebuild.is_damage(SnapshotCorrupt("x"))
    assert rebuild.is_damage(StoreCorrupt("x"))
    assert rebuild.is_damage(Exception("Corruption: block checksum mismatch"))  # rocksdict, later
    assert not rebuild.is_damage(StoreError("cannot open store: IO error: lock hold by current process"))
    assert not rebuild.is_damage(ClusterAdminError("no seed answered"))


def _store_with_a_damaged_mailbox_block(data_dir: Path) -> None:
    """A store that opens but whose mailbox scan (the machine's recount at start) hits a bad block."""
    from rocksdict import Rdict

    store = Store.open(data_dir / "store")
    machine = MailboxMachine(store, lambda changes: None)
    for index in range(1, 300):
        machine.apply_batch(index, [ops.encode(ops.CreateOp(f"box.{index:05d}" + "x" * 40, 1000, 0, True, "d" * 200))])
    store.close()
    db = Rdict(str(data_dir / "store"))
    db.flush()  # everything into one SST
    db.close()
    sst = max((data_dir / "store").rglob("*.sst"), key=lambda p: p.stat().st_size)
    data = bytearray(sst.read_bytes())
    for at in range(len(data) // 3, len(data) // 3 + 64):
        data[at] ^= 0xFF
    sst.write_bytes(bytes(data))


def _fails_on_the_damage(data_dir: Path) -> BaseException:
    store = Store.open(data_dir / "store")
    try:
        MailboxMachine(store, lambda changes: None)
    except Exception as exc:  # what rocksdict raises: a plain Exception
        assert rebuild.is_damage(exc), exc
        return exc
    finally:
        store.close()
    raise AssertionError("the damaged block was not read")


def test_a_rebuilt_store_opens_where_the_damaged_one_was_while_the_error_is_kept(tmp_path: Path) -> None:
    """Without damage_reason the error's frames keep the damaged DB alive (an iterator holds it):
    the store opened at the same path then finds the LOCK taken, or the old DB's files in it."""
    _store_with_a_damaged_mailbox_block(tmp_path)
    error = _fails_on_the_damage(tmp_path)
    reason = rebuild.damage_reason(error)  # what serve() takes from the error, still held here
    assert "Corruption:" in reason and error is not None
    kept = rebuild.set_aside(tmp_path, reason)
    with Store.open(tmp_path / "store") as store:  # a new, empty store at the same path
        assert store.last_applied() == 0 and store.stored_totals() == (0, 0, 0)
    assert kept is not None and list((kept / "store").glob("*.sst"))
