"""Open, reopen, format versions, durability options, checkpoints and restore."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mq9cluster.errors import StoreCorrupt
from mq9cluster.store import Mailbox, Store, StoreError, StoreFormatError, keys

MailboxFactory = Callable[..., Mailbox]


def _append(store: Store, address: str, count: int) -> list[int]:
    batch = store.batch(store.last_applied() + 1)
    ids = [batch.append_message(address, 1, n, b"m%d" % n) for n in range(count)]
    batch.commit()
    return ids


def _create(store: Store, mailbox: MailboxFactory, address: str, **fields: object) -> None:
    batch = store.batch(store.last_applied() + 1)
    batch.put_mailbox(mailbox(address, **fields))
    batch.commit()


def test_state_survives_a_reopen(tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "db") as store:
        _create(store, mailbox, "a", public=True, expires_at=9)
        _append(store, "a", 3)
    with Store.open(tmp_path / "db") as store:
        assert store.last_applied() == 2
        assert store.get_mailbox("a") == mailbox("a", public=True, expires_at=9, next_msg_id=4,
                                                 msg_count=3, msg_bytes=6)
        assert _append(store, "a", 1) == [4]


@pytest.mark.parametrize("options", [{"wal": False}, {"wal": True, "sync": True}])
def test_durability_options_keep_committed_state_across_a_clean_close(
        tmp_path: Path, mailbox: MailboxFactory, options: dict[str, bool]) -> None:
    with Store.open(tmp_path / "db", **options) as store:
        _create(store, mailbox, "a")
        _append(store, "a", 2)
        store.persist()
    with Store.open(tmp_path / "db") as store:
        assert store.last_applied() == 2 and len(list(store.iter_messages("a"))) == 2


def test_sync_without_wal_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Store.open(tmp_path / "db", wal=False, sync=True)


def test_an_unknown_format_version_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store.open(tmp_path / "db").close()
    monkeypatch.setattr(keys, "FORMAT_VERSION", keys.FORMAT_VERSION + 1)
    with pytest.raises(StoreFormatError, match="format version 1; this build reads only version 2"):
        Store.open(tmp_path / "db")
    monkeypatch.undo()
    Store.open(tmp_path / "db").close()  # the refused open released the directory


def test_a_directory_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "CURRENT").write_text("MANIFEST-999999\n")
    with pytest.raises(StoreError, match="cannot open store"):
        Store.open(tmp_path / "junk")


def test_a_store_open_twice_is_refused(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db"), pytest.raises(StoreError) as refused:
        Store.open(tmp_path / "db")
    assert not isinstance(refused.value, StoreCorrupt)  # a second process is no reason to rebuild


def test_damaged_files_are_told_apart_as_corruption(tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "db") as store:
        _create(store, mailbox, "a")
    sst = max((tmp_path / "db").rglob("*.sst"), key=lambda p: p.stat().st_size)
    sst.write_bytes(sst.read_bytes()[: sst.stat().st_size // 2])
    with pytest.raises(StoreCorrupt, match="Corruption:"):
        Store.open(tmp_path / "db")


def test_a_damaged_block_read_while_opening_is_corruption(tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "db") as store:
        _create(store, mailbox, "a")
    sst = max((tmp_path / "db").rglob("*.sst"), key=lambda p: p.stat().st_size)
    data = bytearray(sst.read_bytes())
    data[20] ^= 0x10  # inside the first data block: the file still opens, its reads fail
    sst.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt, match="block checksum mismatch"):
        Store.open(tmp_path / "db")


def test_a_store_with_data_but_no_format_stamp_is_corrupt(tmp_path: Path) -> None:
    from rocksdict import Rdict  # what a store that lost its first write looks like

    db = Rdict(str(tmp_path / "db"))
    db[b"k"] = b"v"
    db.close()
    with pytest.raises(StoreCorrupt, match="without an mq9cluster format version"):
        Store.open(tmp_path / "db")


def test_checkpoint_and_restore_round_trip(tmp_path: Path, mailbox: MailboxFactory) -> None:
    live = tmp_path / "live"
    with Store.open(live) as store:
        _create(store, mailbox, "a", public=True, expires_at=77)
        _append(store, "a", 5)
        batch = store.batch(store.last_applied() + 1)
        batch.advance_group_cursor("a", "g", {1: 3})
        batch.put_dedup(b"proposal", b"ok")
        batch.commit()
        assert store.checkpoint(tmp_path / "snap") == 3
        _append(store, "a", 5)  # after the checkpoint: must not come back with the restore
        assert store.last_applied() == 4
        expected_after = store.key_counts()

    with Store.restore(tmp_path / "snap", live) as restored:
        assert restored.last_applied() == 3
        assert [m.msg_id for m in restored.iter_messages("a")] == [1, 2, 3, 4, 5]
        assert restored.get_group_cursor("a", "g") == {1: 3}
        assert restored.get_dedup(b"proposal") == b"ok"
        assert [m.address for m in restored.public_mailboxes()] == ["a"]
        assert [e.address for e in restored.due_expiries(77)] == ["a"]
        assert _append(restored, "a", 5) == [6, 7, 8, 9, 10]  # the journal replays entry 4
        assert restored.key_counts() == expected_after
    assert (tmp_path / "snap").is_dir()
    # the copy is the next generation; the pointer names it; the old generation is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.1", "live.CURRENT", "snap"]


def test_restore_of_a_bad_checkpoint_leaves_the_store_alone(
        tmp_path: Path, mailbox: MailboxFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(tmp_path / "live") as store:
        _create(store, mailbox, "a")
        store.checkpoint(tmp_path / "snap")
    monkeypatch.setattr(keys, "FORMAT_VERSION", keys.FORMAT_VERSION + 1)
    with pytest.raises(StoreFormatError):
        Store.restore(tmp_path / "snap", tmp_path / "live")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "snap"]
    with Store.open(tmp_path / "live") as store:
        assert store.get_mailbox("a") is not None


def test_checkpoint_into_an_existing_directory_fails(tmp_path: Path) -> None:
    (tmp_path / "snap").mkdir()
    with Store.open(tmp_path / "db") as store, pytest.raises(StoreError):
        store.checkpoint(tmp_path / "snap")


def test_a_checkpoint_taken_during_commits_holds_exactly_its_index(
        tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "live") as store:
        _create(store, mailbox, "a")
        done = threading.Event()

        def commit_forever() -> None:
            while not done.is_set() and store.last_applied() < 2_000:
                _append(store, "a", 5)

        writer = threading.Thread(target=commit_forever)
        writer.start()
        taken: list[tuple[int, Path]] = []
        try:
            for n in range(5):
                while store.last_applied() < 10 * (n + 1):  # let the writer move on
                    time.sleep(0.001)
                taken.append((store.checkpoint(tmp_path / f"snap{n}"), tmp_path / f"snap{n}"))
        finally:
            done.set()
            writer.join()
    for index, snap in taken:
        with Store.open(snap) as restored:
            assert restored.last_applied() == index
            assert restored.get_mailbox("a").msg_count == 5 * (index - 1)  # type: ignore[union-attr]
