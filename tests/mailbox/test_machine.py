"""The mailbox state machine on a real RocksDB store: deterministic, idempotent, user errors as results."""

from __future__ import annotations

import pytest

from mq9cluster.mailbox import ops
from mq9cluster.mailbox.machine import Appended, Created, MailboxMachine, Removed
from mq9cluster.store import Store

T0 = 1_700_000_000_000


@pytest.fixture
def machine(tmp_path):
    store = Store.open(tmp_path / "store")
    changes: list = []
    yield MailboxMachine(store, changes.extend), changes
    store.close()


def apply(machine, index, *op_list):
    return machine.apply_batch(index, [ops.encode(op) for op in op_list])


def test_create_send_and_replay_order(machine):
    m, changes = machine
    assert apply(m, 2, ops.CreateOp("inbox", T0, 0, False, "")) == [{"mail_address": "inbox", "is_new": True}]
    results = apply(m, 3, *(ops.AppendOp("inbox", prio, T0 + i, f"m{i}".encode(), None)
                            for i, prio in enumerate([1, 3, 0, 2, 3, 1])))
    assert [r["msg_id"] for r in results] == [1, 2, 3, 4, 5, 6]
    replay = [(msg.priority, msg.payload) for msg in m.store.iter_messages("inbox")]
    assert replay == [(3, b"m1"), (3, b"m4"), (2, b"m3"), (1, b"m0"), (1, b"m5"), (0, b"m2")]
    assert m.last_applied() == 3
    assert sum(isinstance(c, Appended) for c in changes) == 6
    assert isinstance(changes[0], Created)


def test_send_to_missing_or_expired_mailbox_is_an_error_result(machine):
    m, _ = machine
    assert apply(m, 2, ops.AppendOp("ghost", 1, T0, b"x", None)) == [{"error": "mailbox ghost does not exist"}]
    apply(m, 3, ops.CreateOp("brief", T0, 1, False, ""))
    assert apply(m, 4, ops.AppendOp("brief", 1, T0 + 999, b"x", None)) == [{"msg_id": 1}]
    assert apply(m, 5, ops.AppendOp("brief", 1, T0 + 1000, b"x", None)) == [{"error": "mailbox brief does not exist"}]


def test_public_create_is_idempotent_and_keeps_ttl_and_desc(machine):
    m, changes = machine
    apply(m, 2, ops.CreateOp("svc.jobs", T0, 60, True, "first"))
    assert apply(m, 3, ops.CreateOp("svc.jobs", T0 + 5, 999, True, "second")) == [
        {"mail_address": "svc.jobs", "is_new": False}]
    [box] = m.store.public_mailboxes()
    assert (box.ttl, box.desc, box.expires_at) == (60, "first", T0 + 60_000)
    assert sum(isinstance(c, Created) for c in changes) == 1


def test_expiry_removes_mailbox_and_messages_and_reports_it(machine):
    m, changes = machine
    apply(m, 2, ops.CreateOp("svc.tmp", T0, 10, True, "d"), ops.AppendOp("svc.tmp", 1, T0, b"x", None))
    assert apply(m, 3, ops.ExpireOp("svc.tmp", T0 + 9_999)) == [{"expired": False}]
    assert m.store.due_expiries(T0 + 10_000)
    assert apply(m, 4, ops.ExpireOp("svc.tmp", T0 + 10_000)) == [{"expired": True}]
    assert m.store.get_mailbox("svc.tmp") is None
    assert list(m.store.iter_messages("svc.tmp")) == []
    assert m.store.due_expiries(T0 + 10_000) == []
    assert any(isinstance(c, Removed) and c.reason == "expired" for c in changes)


def test_msg_ids_are_never_reused_after_public_recreate(machine):
    m, _ = machine
    apply(m, 2, ops.CreateOp("svc.a", T0, 1, True, ""), ops.AppendOp("svc.a", 1, T0, b"x", None))
    apply(m, 3, ops.ExpireOp("svc.a", T0 + 1000))
    apply(m, 4, ops.CreateOp("svc.a", T0 + 2000, 0, True, ""))
    assert apply(m, 5, ops.AppendOp("svc.a", 1, T0 + 2000, b"y", None)) == [{"msg_id": 2}]


def test_delete_message(machine):
    m, _ = machine
    apply(m, 2, ops.CreateOp("a", T0, 0, False, ""), ops.AppendOp("a", 1, T0, b"x", None))
    assert apply(m, 3, ops.DeleteMessageOp("a", 1)) == [{"deleted": True}]
    assert apply(m, 4, ops.DeleteMessageOp("a", 1))[0]["error"]
    assert apply(m, 5, ops.DeleteMessageOp("zz", 1)) == [{"error": "mailbox zz does not exist"}]
    assert list(m.store.iter_messages("a")) == []


def test_group_progress_is_replicated_state(machine):
    m, _ = machine
    apply(m, 2, ops.CreateOp("q", T0, 0, False, ""))
    apply(m, 3, ops.GroupProgressOp("q", "workers", {1: 5, 3: 2}), ops.GroupProgressOp("q", "workers", {1: 3}))
    assert m.store.get_group_cursor("q", "workers") == {1: 5, 3: 2}
    assert apply(m, 4, ops.GroupProgressOp("nope", "w", {1: 1}))[0]["error"]


def test_claims_hand_out_each_message_once_highest_priority_first(machine):
    m, _ = machine
    apply(m, 2, ops.CreateOp("q", T0, 0, False, ""))
    apply(m, 3, *(ops.AppendOp("q", prio, T0, b"m", None) for prio in [1, 3, 1, 2, 3]))  # ids 1..5
    first, second = apply(m, 4, ops.ClaimOp("q", "w", [0, 1, 2, 3], 3), ops.ClaimOp("q", "w", [0, 1, 2, 3], 3))
    assert first == {"claimed": [[3, 2], [3, 5], [2, 4]]}
    assert second == {"claimed": [[1, 1], [1, 3]]}  # the same entry sees the first claim's cursor
    assert apply(m, 5, ops.ClaimOp("q", "w", [0, 1, 2, 3], 10)) == [{"claimed": []}]
    assert apply(m, 6, ops.ClaimOp("q", "other", [3], 10)) == [{"claimed": [[3, 2], [3, 5]]}]  # groups are apart
    # appended in the same entry as a claim: left for the next claim (the claim reads committed state)
    assert apply(m, 7, ops.AppendOp("q", 1, T0, b"late", None), ops.ClaimOp("q", "w", [1], 10))[1] == {"claimed": []}
    assert apply(m, 8, ops.ClaimOp("q", "w", [1], 10)) == [{"claimed": [[1, 6]]}]
    assert apply(m, 9, ops.ClaimOp("gone", "w", [1], 10))[0]["error"] == "mailbox gone does not exist"
    assert [msg.msg_id for msg in m.store.get_messages("q", [[1, 6], [3, 99], [3, 2]])] == [6, 2]


def test_private_address_collision_is_refused(machine):
    m, _ = machine
    apply(m, 2, ops.CreateOp("abc", T0, 0, False, ""))
    assert apply(m, 3, ops.CreateOp("abc", T0, 0, False, ""))[0]["error"]
    assert apply(m, 4, ops.CreateOp("abc", T0, 0, True, ""))[0]["error"]


def test_a_proposal_id_applied_twice_appends_once_and_answers_alike(machine):
    m, changes = machine
    create = [ops.encode(ops.CreateOp("inbox", T0, 0, False, ""))]
    sends = [ops.encode(ops.AppendOp("inbox", 1, T0, b"m%d" % i, None)) for i in range(3)]
    first_id, retry_of_first, other_id = b"p" * 16, b"p" * 16, b"q" * 16
    assert m.apply_batch(2, create, b"c" * 16) == [{"mail_address": "inbox", "is_new": True}]
    first = m.apply_batch(3, sends, first_id)
    assert first == [{"msg_id": 1}, {"msg_id": 2}, {"msg_id": 3}]
    appended = len(changes)
    assert m.apply_batch(4, sends, retry_of_first) == first  # a retry of a committed entry
    assert len(changes) == appended and m.last_applied() == 4
    assert [msg.msg_id for msg in m.store.iter_messages("inbox")] == [1, 2, 3]
    assert m.apply_batch(5, sends, other_id) == [{"msg_id": 4}, {"msg_id": 5}, {"msg_id": 6}]
    assert m.apply_batch(6, create, b"c" * 16) == [{"mail_address": "inbox", "is_new": True}]


def test_full_mailbox_refuses_sends_and_keeps_what_it_stored(machine):
    m, changes = machine
    apply(m, 2, ops.CreateOp("small", T0, 0, False, ""))
    assert apply(m, 3, ops.AppendOp("small", 1, T0, b"x" * 6, b"hd", 10)) == [{"msg_id": 1}]
    full = apply(m, 4, ops.AppendOp("small", 1, T0, b"abc", None, 10))
    assert "small is full" in full[0]["error"] and "limit of 10" in full[0]["error"]
    assert apply(m, 5, ops.AppendOp("small", 1, T0, b"ab", None, 10)) == [{"msg_id": 2}]  # exactly at the limit
    assert [msg.payload for msg in m.store.iter_messages("small")] == [b"x" * 6, b"ab"]
    assert apply(m, 6, ops.AppendOp("small", 1, T0, b"more", None)) == [{"msg_id": 3}]  # no limit in the op


def test_full_mailbox_decision_is_the_same_within_one_batch(machine):
    m, _ = machine
    apply(m, 2, ops.CreateOp("small", T0, 0, False, ""))
    results = apply(m, 3, *(ops.AppendOp("small", 1, T0, b"12345", None, 12) for _ in range(3)))
    assert results[:2] == [{"msg_id": 1}, {"msg_id": 2}]
    assert "is full" in results[2]["error"]


def test_append_written_before_the_limit_existed_still_decodes():
    import msgpack
    old = msgpack.packb([ops.OP_APPEND, "inbox", 1, T0, b"p", None], use_bin_type=True)
    assert ops.decode(old) == ops.AppendOp("inbox", 1, T0, b"p", None, 0)


def test_totals_follow_every_change_and_match_a_recount(machine):
    m, _ = machine
    apply(m, 2, ops.CreateOp("a", T0, 1, False, ""), ops.CreateOp("b", T0, 0, False, ""))
    apply(m, 3, ops.AppendOp("a", 1, T0, b"1234", b"hh"), ops.AppendOp("b", 1, T0, b"xy", None),
          ops.AppendOp("b", 2, T0, b"z", None))
    assert (m.totals.mailboxes, m.totals.messages, m.totals.bytes) == (2, 3, 9)
    apply(m, 4, ops.DeleteMessageOp("b", 1))
    assert (m.totals.mailboxes, m.totals.messages, m.totals.bytes) == (2, 2, 7)
    apply(m, 5, ops.ExpireOp("a", T0 + 1000))
    assert (m.totals.mailboxes, m.totals.messages, m.totals.bytes) == (1, 1, 1)
    apply(m, 6, ops.CreateOp("c", T0, 0, False, ""))
    counted = (m.totals.mailboxes, m.totals.messages, m.totals.bytes)
    m.recount()
    assert counted == (m.totals.mailboxes, m.totals.messages, m.totals.bytes) == (2, 1, 1)


def test_mailbox_count_limit(machine):
    m, _ = machine
    results = apply(m, 2, *(ops.CreateOp(f"m{i}", T0, 0, False, "", 2) for i in range(3)))
    assert [r.get("is_new") for r in results[:2]] == [True, True]
    assert "too many mailboxes" in results[2]["error"]
    apply(m, 3, ops.CreateOp("svc", T0, 0, True, "", 0))  # no limit in the op
    assert apply(m, 4, ops.CreateOp("svc", T0, 0, True, "", 1)) == [{"mail_address": "svc", "is_new": False}]


def test_total_bytes_limit_across_mailboxes(machine):
    m, _ = machine
    apply(m, 2, ops.CreateOp("a", T0, 0, False, ""), ops.CreateOp("b", T0, 0, False, ""))
    assert apply(m, 3, ops.AppendOp("a", 1, T0, b"x" * 8, None, 0, 10)) == [{"msg_id": 1}]
    full = apply(m, 4, ops.AppendOp("b", 1, T0, b"yyy", None, 0, 10))
    assert "storage is full" in full[0]["error"]
    apply(m, 5, ops.DeleteMessageOp("a", 1))
    assert apply(m, 6, ops.AppendOp("b", 1, T0, b"yyy", None, 0, 10)) == [{"msg_id": 1}]
    assert [msg.payload for msg in m.store.iter_messages("b")] == [b"yyy"]
