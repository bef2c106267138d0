"""Proposal dedup: a retried proposal finds its first result until the window passes."""

from __future__ import annotations

from pathlib import Path

from mq9cluster.store import Store


def test_a_recorded_result_is_found_in_the_batch_and_after_commit(store: Store) -> None:
    batch = store.batch(1)
    assert batch.get_dedup(b"\x01" * 16) is None
    batch.put_dedup(b"\x01" * 16, b'{"msg_id": 1}')
    assert batch.get_dedup(b"\x01" * 16) == b'{"msg_id": 1}'
    batch.commit()
    assert store.get_dedup(b"\x01" * 16) == b'{"msg_id": 1}'
    assert store.get_dedup(b"\x02" * 16) is None


def test_entries_are_pruned_once_the_window_passes(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", dedup_window=3) as store:
        for index in range(1, 6):
            batch = store.batch(index)
            batch.put_dedup(b"id%d" % index, b"r%d" % index)
            batch.commit()
        # entries written at index i live through index i + window - 1
        assert [store.get_dedup(b"id%d" % i) for i in range(1, 6)] == [
            None, None, b"r3", b"r4", b"r5"]
        assert store.key_counts() == {"meta": 2, "dedup": 3, "dedup_order": 3}
        for index in range(6, 9):
            store.batch(index).commit()
        assert store.key_counts() == {"meta": 2}


def test_a_rewritten_entry_lives_from_its_new_index(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", dedup_window=2) as store:
        batch = store.batch(1)
        batch.put_dedup(b"id", b"first")
        batch.commit()
        batch = store.batch(2)
        batch.put_dedup(b"id", b"second")
        batch.commit()
        store.batch(3).commit()
        assert store.get_dedup(b"id") == b"second"
        assert store.key_counts() == {"meta": 2, "dedup": 1, "dedup_order": 1}
        store.batch(4).commit()
        assert store.get_dedup(b"id") is None


def test_pruning_survives_a_reopen(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db", dedup_window=2) as store:
        batch = store.batch(1)
        batch.put_dedup(b"id", b"r")
        batch.commit()
    with Store.open(tmp_path / "db", dedup_window=2) as store:
        store.batch(2).commit()
        assert store.get_dedup(b"id") == b"r"
        store.batch(3).commit()
        assert store.get_dedup(b"id") is None
