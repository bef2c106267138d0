"""Read views: replay order, priority filters, per-level cursors, summaries, point-in-time scans."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mq9cluster.store import Mailbox, Message, MessageSummary, Priority, Store

MailboxFactory = Callable[..., Mailbox]
_fresh = (f"box{n}" for n in itertools.count())


def _fill(store: Store, mailbox: MailboxFactory, address: str, priorities: list[int]) -> None:
    batch = store.batch(store.last_applied() + 1)
    batch.put_mailbox(mailbox(address))
    for n, priority in enumerate(priorities):
        batch.append_message(address, priority, 1_000 + n, b"%d" % n)
    batch.commit()


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 3), max_size=80), st.data())
def test_replay_is_priority_descending_then_fifo(
        store: Store, mailbox: MailboxFactory, priorities: list[int], data: st.DataObject) -> None:
    address = next(_fresh)
    _fill(store, mailbox, address, priorities)
    stored = [(p, i + 1) for i, p in enumerate(priorities)]
    expected = sorted(stored, key=lambda pair: (-pair[0], pair[1]))
    assert [(m.priority, m.msg_id) for m in store.iter_messages(address)] == expected

    levels = data.draw(st.sets(st.integers(0, 3)))
    cursor = data.draw(st.dictionaries(st.integers(0, 3), st.integers(0, len(priorities) + 1)))
    filtered = [(p, i) for p, i in expected if p in levels and i > cursor.get(p, 0)]
    scan = store.iter_messages(address, priorities=levels, after=cursor)
    assert [(m.priority, m.msg_id) for m in scan] == filtered


def test_messages_carry_payload_headers_and_timestamp(
        store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    batch.put_mailbox(mailbox("a"))
    batch.append_message("a", Priority.URGENT, 1_700_000_000_123, b"\x00body", b"NATS/1.0\r\n\r\n")
    batch.append_message("a", Priority.LOW, 1_700_000_000_456, b"", b"")
    batch.commit()
    assert list(store.iter_messages("a")) == [
        Message("a", 2, 1, 1_700_000_000_123, b"\x00body", b"NATS/1.0\r\n\r\n"),
        Message("a", 0, 2, 1_700_000_000_456, b"", None),
    ]
    assert store.list_message_summaries("a") == [MessageSummary(1, 2, 1_700_000_000_123),
                                                 MessageSummary(2, 0, 1_700_000_000_456)]


def test_neighbour_mailboxes_do_not_leak_into_each_other(
        store: Store, mailbox: MailboxFactory) -> None:
    for address in ("a.b", "a", "a0", "b"):
        _fill(store, mailbox, address, [3, 0, 1])
    for address in ("a", "a.b", "a0", "b"):
        assert {m.address for m in store.iter_messages(address)} == {address}
        assert len(list(store.iter_messages(address, priorities=[0]))) == 1
        assert len(store.list_message_summaries(address)) == 3
    assert list(store.iter_messages("c")) == []


def test_a_scan_is_a_point_in_time_view(store: Store, mailbox: MailboxFactory) -> None:
    _fill(store, mailbox, "a", [1, 1])
    scan = store.iter_messages("a")
    batch = store.batch(2)
    batch.append_message("a", 3, 5, b"late")
    batch.delete_message("a", 1)
    batch.commit()
    assert scan.last_applied == 1
    assert [m.msg_id for m in scan] == [1, 2]
    fresh = store.iter_messages("a")
    assert fresh.last_applied == 2 and [m.msg_id for m in fresh] == [3, 2]


def test_counts_and_bytes_follow_appends_and_deletes(
        store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    batch.put_mailbox(mailbox("a"))
    batch.append_message("a", 1, 1, b"12345", b"hh")
    batch.append_message("a", 3, 1, b"123")
    batch.commit()
    assert (store.get_mailbox("a").msg_count, store.get_mailbox("a").msg_bytes) == (2, 10)  # type: ignore[union-attr]
    batch = store.batch(2)
    assert batch.delete_message("a", 1)
    batch.commit()
    assert (store.get_mailbox("a").msg_count, store.get_mailbox("a").msg_bytes) == (1, 3)  # type: ignore[union-attr]


def test_public_mailboxes_are_listed_in_address_order(
        store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    for address in ("zeta", "alpha.b", "alpha", "private"):
        batch.put_mailbox(mailbox(address, public=address != "private", desc=address.upper()))
    batch.commit()
    listed = store.public_mailboxes()
    assert [m.address for m in listed] == ["alpha", "alpha.b", "zeta"]
    assert listed[0].desc == "ALPHA"


def test_due_expiries_returns_only_the_due_soonest_first(
        store: Store, mailbox: MailboxFactory) -> None:
    batch = store.batch(1)
    for address, expires_at in (("late", 3_000), ("never", 0), ("early", 1_000), ("now", 2_000),
                                ("also", 2_000)):
        batch.put_mailbox(mailbox(address, expires_at=expires_at))
    batch.commit()
    assert store.due_expiries(999) == []
    assert [(e.expires_at, e.address) for e in store.due_expiries(2_000)] == [
        (1_000, "early"), (2_000, "also"), (2_000, "now")]
    assert [e.address for e in store.due_expiries(2_000, limit=2)] == ["early", "also"]
    assert len(store.due_expiries(2**62)) == 4


def test_reads_work_on_a_reopened_store(tmp_path: Path, mailbox: MailboxFactory) -> None:
    with Store.open(tmp_path / "db") as store:
        _fill(store, mailbox, "a", [0, 3])
    with Store.open(tmp_path / "db") as store:
        assert store.last_applied() == 1
        assert [m.msg_id for m in store.iter_messages("a")] == [2, 1]
