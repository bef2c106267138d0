"""Deleting mailboxes and messages: nothing leaks, neighbours survive, msg_ids are never reused."""

from __future__ import annotations

from collections.abc import Callable

from mq9cluster.store import Mailbox, Store

MailboxFactory = Callable[..., Mailbox]


def _populate(store: Store, mailbox: MailboxFactory, address: str, public: bool) -> None:
    batch = store.batch(store.last_applied() + 1)
    batch.put_mailbox(mailbox(address, public=public, expires_at=50_000, desc=address))
    for n in range(40):
        batch.append_message(address, n % 4, n, b"payload", b"h" if n % 3 else None)
    batch.advance_group_cursor(address, "workers", {3: 5, 0: 2})
    batch.advance_group_cursor(address, "audit", {1: 1})
    batch.commit()


def test_delete_mailbox_leaves_no_key_behind(store: Store, mailbox: MailboxFactory) -> None:
    for neighbour in ("a.b", "a0", "b"):
        _populate(store, mailbox, neighbour, public=True)
    before = store.key_counts()
    _populate(store, mailbox, "a", public=False)
    batch = store.batch(store.last_applied() + 1)
    deleted = batch.delete_mailbox("a")
    batch.commit()
    assert deleted is not None and deleted.msg_count == 40 and deleted.next_msg_id == 41
    assert store.key_counts() == before
    assert store.get_mailbox("a") is None and list(store.iter_messages("a")) == []
    assert store.get_group_cursor("a", "workers") == {}
    for neighbour in ("a.b", "a0", "b"):
        assert len(list(store.iter_messages(neighbour))) == 40
        assert store.get_group_cursor(neighbour, "workers") == {3: 5, 0: 2}
    assert [m.address for m in store.public_mailboxes()] == ["a.b", "a0", "b"]
    assert [e.address for e in store.due_expiries(50_000)] == ["a.b", "a0", "b"]


def test_a_public_name_keeps_its_msg_ids_across_delete_and_recreate(
        store: Store, mailbox: MailboxFactory) -> None:
    _populate(store, mailbox, "team.inbox", public=True)
    batch = store.batch(store.last_applied() + 1)
    batch.delete_mailbox("team.inbox")
    batch.commit()
    assert store.key_counts() == {"meta": 2, "retired": 1}
    batch = store.batch(store.last_applied() + 1)
    recreated = batch.put_mailbox(mailbox("team.inbox", public=True))
    assert recreated.next_msg_id == 41 and recreated.msg_count == 0
    assert batch.append_message("team.inbox", 1, 1, b"again") == 41
    batch.commit()
    assert "retired" not in store.key_counts()
    assert [m.msg_id for m in store.iter_messages("team.inbox")] == [41]


def test_delete_and_recreate_in_one_batch(store: Store, mailbox: MailboxFactory) -> None:
    _populate(store, mailbox, "p", public=True)
    batch = store.batch(store.last_applied() + 1)
    batch.append_message("p", 3, 1, b"doomed")
    batch.delete_mailbox("p")
    assert batch.put_mailbox(mailbox("p", public=True)).next_msg_id == 42
    assert batch.delete_message("p", 41) is False  # appended before the delete: gone
    assert batch.delete_message("p", 3) is False  # committed before the delete: gone
    assert batch.append_message("p", 3, 2, b"kept") == 42
    assert batch.get_group_cursor("p", "workers") == {}
    batch.commit()
    assert [(m.msg_id, m.payload) for m in store.iter_messages("p")] == [(42, b"kept")]
    assert store.get_group_cursor("p", "workers") == {}
    assert store.key_counts() == {"meta": 2, "mailbox": 1, "message": 1, "public": 1}


def test_recreate_then_delete_in_one_batch_leaves_nothing(
        store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    batch.put_mailbox(mailbox("x", expires_at=10))
    batch.append_message("x", 0, 1, b"m")
    batch.delete_mailbox("x")
    batch.commit()
    assert store.key_counts() == {"meta": 2}


def test_delete_message_by_id_finds_its_priority(store: Store, mailbox: MailboxFactory) -> None:
    _populate(store, mailbox, "a", public=False)
    batch = store.batch(store.last_applied() + 1)
    assert batch.delete_message("a", 7)  # priority 2, found by probing
    assert not batch.delete_message("a", 7)  # already gone in this batch
    assert batch.delete_message("a", 8, priority=3)
    assert not batch.delete_message("a", 10, priority=0)  # it is at level 1: not found
    assert not batch.delete_message("a", 0) and not batch.delete_message("a", 41)
    batch.commit()
    remaining = [m.msg_id for m in store.iter_messages("a")]
    assert 7 not in remaining and 8 not in remaining and len(remaining) == 38
    assert store.get_mailbox("a").msg_count == 38  # type: ignore[union-attr]


def test_delete_a_message_appended_in_the_same_batch(
        store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    batch.put_mailbox(mailbox("a"))
    first = batch.append_message("a", 2, 1, b"abc")
    second = batch.append_message("a", 0, 1, b"de")
    assert batch.delete_message("a", first)
    assert batch.get_mailbox("a").msg_bytes == 2  # type: ignore[union-attr]
    batch.commit()
    assert [m.msg_id for m in store.iter_messages("a")] == [second]
    batch = store.batch(2)
    assert batch.append_message("a", 1, 1, b"f") == 3  # ids are not reused after a delete
    batch.commit()
