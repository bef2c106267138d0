"""Batches: atomic with last_applied, reads that see the batch's own writes, index upkeep."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from mq9cluster.store import AlreadyApplied, Mailbox, NoSuchMailbox, Store, StoreError

MailboxFactory = Callable[..., Mailbox]


def test_nothing_is_visible_before_commit_and_everything_after(
        store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(7)
    batch.put_mailbox(mailbox("a", public=True, expires_at=5_000))
    batch.append_message("a", 1, 100, b"one")
    batch.advance_group_cursor("a", "workers", {1: 1})
    batch.put_dedup(b"p1", b"result")
    assert store.get_mailbox("a") is None
    assert list(store.iter_messages("a")) == []
    assert store.public_mailboxes() == [] and store.due_expiries(10_000) == []
    assert store.get_group_cursor("a", "workers") == {} and store.get_dedup(b"p1") is None
    assert store.last_applied() == 0

    batch.commit()
    assert store.last_applied() == 7
    assert store.get_mailbox("a") is not None
    assert [m.payload for m in store.iter_messages("a")] == [b"one"]
    assert [m.address for m in store.public_mailboxes()] == ["a"]
    assert [e.address for e in store.due_expiries(10_000)] == ["a"]
    assert store.get_group_cursor("a", "workers") == {1: 1}
    assert store.get_dedup(b"p1") == b"result"


def test_a_dropped_batch_changes_nothing(store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    batch.put_mailbox(mailbox("a"))
    del batch
    assert store.get_mailbox("a") is None and store.last_applied() == 0
    assert store.key_counts() == {"meta": 1}


def test_an_empty_batch_advances_last_applied(store: Store) -> None:
    store.batch(3).commit()
    assert store.last_applied() == 3


def test_indexes_at_or_below_last_applied_are_refused(store: Store) -> None:
    store.batch(5).commit()
    for index in (5, 4):
        with pytest.raises(AlreadyApplied):
            store.batch(index)
    first, second = store.batch(6), store.batch(6)
    first.commit()
    with pytest.raises(AlreadyApplied):
        second.commit()


def test_a_committed_batch_cannot_be_reused(store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    batch.commit()
    with pytest.raises(StoreError):
        batch.put_mailbox(mailbox("a"))


def test_msg_ids_are_allocated_inside_one_batch(store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    batch.put_mailbox(mailbox("a"))
    ids = [batch.append_message("a", i % 4, 100 + i, b"x" * 3) for i in range(500)]
    assert ids == list(range(1, 501))
    assert batch.get_mailbox("a") == replace(mailbox("a"), next_msg_id=501, msg_count=500,
                                             msg_bytes=1500)
    batch.commit()
    second = store.batch(2)
    assert second.append_message("a", 1, 200, b"y") == 501
    second.commit()
    assert store.get_mailbox("a").next_msg_id == 502  # type: ignore[union-attr]


def test_batch_reads_see_committed_state_and_own_writes(
        store: Store, mailbox: MailboxFactory) -> None:
    first = store.batch(1)
    first.put_mailbox(mailbox("a"))
    first.advance_group_cursor("a", "g", {3: 4})
    first.commit()
    batch = store.batch(2)
    assert batch.has_mailbox("a") and not batch.has_mailbox("b")
    batch.put_mailbox(mailbox("b"))
    assert batch.has_mailbox("b")
    batch.advance_group_cursor("a", "g", {1: 9})
    assert batch.get_group_cursor("a", "g") == {3: 4, 1: 9}
    assert batch.delete_mailbox("a") is not None
    assert not batch.has_mailbox("a") and batch.get_group_cursor("a", "g") == {}


def test_group_cursors_only_move_forward(store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    batch.put_mailbox(mailbox("a"))
    batch.advance_group_cursor("a", "g", {3: 10, 2: 5})
    batch.advance_group_cursor("a", "g", {3: 7, 2: 6, 0: 1})
    batch.commit()
    assert store.get_group_cursor("a", "g") == {3: 10, 2: 6, 0: 1}
    assert store.get_group_cursor("a", "other") == {}


def test_mutations_of_a_missing_mailbox_raise(store: Store) -> None:
    batch = store.batch(1)
    with pytest.raises(NoSuchMailbox):
        batch.append_message("nope", 1, 1, b"x")
    with pytest.raises(NoSuchMailbox):
        batch.advance_group_cursor("nope", "g", {1: 1})
    assert batch.delete_message("nope", 1) is False
    assert batch.delete_mailbox("nope") is None


def test_put_mailbox_keeps_the_store_owned_counters(
        store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    stored = batch.put_mailbox(mailbox("a", next_msg_id=99, msg_count=5, msg_bytes=7))
    assert (stored.next_msg_id, stored.msg_count, stored.msg_bytes) == (1, 0, 0)
    batch.append_message("a", 1, 1, b"abc")
    batch.put_mailbox(mailbox("a", desc="new", next_msg_id=1))
    batch.commit()
    assert store.get_mailbox("a") == mailbox("a", desc="new", next_msg_id=2, msg_count=1,
                                             msg_bytes=3)


def test_changing_ttl_and_visibility_moves_index_entries(
        store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    batch.put_mailbox(mailbox("a", public=True, expires_at=5_000))
    batch.commit()
    batch = store.batch(2)
    batch.put_mailbox(mailbox("a", public=False, expires_at=9_000))
    batch.commit()
    assert store.public_mailboxes() == []
    assert [(e.expires_at, e.address) for e in store.due_expiries(10_000)] == [(9_000, "a")]
    batch = store.batch(3)
    batch.put_mailbox(mailbox("a", public=True, expires_at=0))
    batch.commit()
    assert store.due_expiries(2**62) == []
    assert [m.address for m in store.public_mailboxes()] == ["a"]
    assert store.key_counts() == {"meta": 2, "mailbox": 1, "public": 1}


def test_invalid_priority_changes_nothing(store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    batch.put_mailbox(mailbox("a"))
    with pytest.raises(ValueError):
        batch.append_message("a", 4, 1, b"x")
    assert batch.append_message("a", 3, 1, b"x") == 1
