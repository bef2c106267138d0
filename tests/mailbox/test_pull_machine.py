"""Dialect 3 on the state machine: key compaction, delay, per-message TTL, pull groups and acks.

Deterministic: every time is the ``now_ms`` stamped into an op.
"""

from __future__ import annotations

import pytest

from mq9cluster.mailbox import ops
from mq9cluster.mailbox.machine import MailboxMachine, MessageDeleted
from mq9cluster.store import Store

T0 = 1_700_000_000_000


@pytest.fixture
def machine(tmp_path):
    store = Store.open(tmp_path / "store")
    changes: list = []
    m = MailboxMachine(store, changes.extend)
    m.apply_batch(1, [ops.encode(ops.CreateOp("box", T0, 0, False, ""))])
    yield m, changes
    store.close()


class Log:
    """Applies ops at increasing Raft indexes."""

    def __init__(self, m: MailboxMachine) -> None:
        self.m, self.index = m, 1

    def __call__(self, *op_list):
        self.index += 1
        return self.m.apply_batch(self.index, [ops.encode(op) for op in op_list])


def send(payload, priority=1, now=T0, key="", tags=(), ttl_ms=0, delay_ms=0):
    return ops.SendOp("box", priority, now, payload, None, key, list(tags), ttl_ms, delay_ms)


def fetch(group="g", now=T0, limit=10, deliver="earliest", start=0, force=False, ack_wait_ms=0):
    return ops.FetchOp("box", group, now, limit, deliver, start, force, ack_wait_ms)


def ids(result):
    return [msg_id for _, msg_id, _ in result["messages"]]


def test_key_compaction_keeps_only_the_latest_per_key(machine):
    m, changes = machine
    log = Log(m)
    assert log(send(b"a1", key="k"), send(b"b", key="other"), send(b"a2", key="k")) == [
        {"msg_id": 1}, {"msg_id": 2}, {"msg_id": 3}]
    assert log(send(b"a3", key="k")) == [{"msg_id": 4}]
    assert [msg.payload for msg in m.store.iter_messages("box")] == [b"b", b"a3"]
    assert [c.msg_id for c in changes if isinstance(c, MessageDeleted)] == [1, 3]


def test_delayed_message_is_held_until_a_tick_at_its_due_time(machine):
    m, _ = machine
    log = Log(m)
    assert log(send(b"later", delay_ms=5000)) == [{"msg_id": -1}]
    assert list(m.store.iter_messages("box")) == []
    assert log(ops.TickOp(T0 + 4999, 100)) == [{"released": 0, "expired": 0}]
    assert log(ops.TickOp(T0 + 5000, 100), ops.TickOp(T0 + 5000, 100)) == [
        {"released": 1, "expired": 0}, {"released": 0, "expired": 0}]
    assert [(msg.msg_id, msg.payload) for msg in m.store.iter_messages("box")] == [(1, b"later")]


def test_message_ttl_hides_it_from_fetch_then_a_tick_removes_it(machine):
    m, _ = machine
    log = Log(m)
    log(send(b"short", ttl_ms=1000), send(b"long"))
    assert ids(log(fetch("early", now=T0 + 999))[0]) == [1, 2]
    assert ids(log(fetch("late", now=T0 + 1000))[0]) == [2]
    assert log(ops.TickOp(T0 + 1000, 100)) == [{"released": 0, "expired": 1}]
    assert [msg.msg_id for msg in m.store.iter_messages("box")] == [2]


def test_fetch_in_priority_order_and_a_group_never_gets_a_message_twice_in_ack_wait(machine):
    m, _ = machine
    log = Log(m)
    log(*(send(b"m%d" % i, priority=p) for i, p in enumerate([1, 3, 0, 2, 3])))
    first, second = log(fetch(limit=2), fetch(limit=2))  # two workers in one entry
    assert ids(first) == [2, 5] and ids(second) == [4, 1]
    assert ids(log(fetch(limit=10))[0]) == [3]
    assert ids(log(fetch(limit=10))[0]) == []


def test_unacked_messages_come_back_after_ack_wait_acked_ones_do_not(machine):
    m, _ = machine
    log = Log(m)
    log(*(send(b"m%d" % i) for i in range(4)))
    assert ids(log(fetch(limit=4, ack_wait_ms=1000))[0]) == [1, 2, 3, 4]
    assert log(ops.AckOp("box", "g", [1, 3])) == [{"acked": 2}]
    assert ids(log(fetch(now=T0 + 999))[0]) == []
    again = log(fetch(now=T0 + 1000))[0]
    assert again["messages"] == [[1, 2, 1], [1, 4, 1]]
    assert ids(log(fetch(now=T0 + 1500))[0]) == []  # re-stamped: in flight again


def test_deliver_policies_place_a_new_group_and_force_deliver_moves_it(machine):
    m, _ = machine
    log = Log(m)
    log(*(send(b"m%d" % i, now=T0 + i * 10) for i in range(5)))
    assert ids(log(fetch("latest", deliver="latest"))[0]) == []
    log(send(b"new", now=T0 + 100))
    assert ids(log(fetch("latest", deliver="latest"))[0]) == [6]
    assert ids(log(fetch("byid", deliver="from_id", start=4))[0]) == [4, 5, 6]
    assert ids(log(fetch("bytime", deliver="from_time", start=T0 + 20))[0]) == [3, 4, 5, 6]
    assert ids(log(fetch("byid", deliver="from_id", start=2, force=True))[0]) == [2, 3, 4, 5, 6]


def test_ack_for_an_unknown_group_or_mailbox_is_an_error_result(machine):
    m, _ = machine
    log = Log(m)
    assert "error" in log(ops.AckOp("box", "nobody", [1]))[0]
    assert "error" in log(ops.AckOp("ghost", "g", [1]))[0]
    assert "error" in log(ops.FetchOp("ghost", "g", T0, 1, "earliest", 0, False, 0))[0]


def test_a_message_fetched_after_an_acked_one_still_comes_back_on_time(machine):
    m, _ = machine
    log = Log(m)
    log(send(b"one"))
    assert ids(log(fetch(ack_wait_ms=1000))[0]) == [1]
    log(ops.AckOp("box", "g", [1]), send(b"two"))
    assert ids(log(fetch(now=T0 + 500))[0]) == [2]  # due at T0 + 1500
    assert ids(log(fetch(now=T0 + 1000))[0]) == []  # the earliest deadline seen (T0 + 1000) passed: looks, none due
    assert ids(log(fetch(now=T0 + 1499))[0]) == []
    assert log(fetch(now=T0 + 1500))[0]["messages"] == [[1, 2, 1]]


def test_a_delayed_message_is_not_released_into_a_mailbox_created_again_after_it_was_sent(machine):
    m, _ = machine
    log = Log(m)
    log(ops.CreateOp("svc.jobs", T0, 0, True, ""))
    log(ops.SendOp("svc.jobs", 1, T0 + 10, b"old", None, "", [], 0, 1000))
    log.index += 1
    batch = m.store.batch(log.index)  # deleted (as a mailbox TTL would), then created again
    batch.delete_mailbox("svc.jobs")
    batch.commit()
    log(ops.CreateOp("svc.jobs", T0 + 500, 0, True, ""))
    assert log(ops.TickOp(T0 + 1010, 100)) == [{"released": 0, "expired": 0}]
    assert list(m.store.iter_messages("svc.jobs")) == []


def limited(payload, max_bytes=0, max_total_bytes=0, address="box", key="", delay_ms=0):
    return ops.SendOp(address, 1, T0, payload, None, key, [], 0, delay_ms, max_bytes, max_total_bytes)


def test_full_mailbox_refuses_dialect3_sends_and_keeps_what_it_stored(machine):
    m, changes = machine
    log = Log(m)
    assert log(limited(b"x" * 60, max_bytes=100, key="k"), limited(b"y" * 40, max_bytes=100)) == [
        {"msg_id": 1}, {"msg_id": 2}]
    full = log(limited(b"z", max_bytes=100), limited(b"w" * 61, max_bytes=100, key="k"),
               limited(b"d", max_bytes=100, delay_ms=1000))
    assert all("mailbox box is full: 100 bytes stored" in r["error"] and "msg_id" not in r for r in full)
    assert [msg.payload[:1] for msg in m.store.iter_messages("box")] == [b"x", b"y"]  # key k not replaced
    assert not [c for c in changes if isinstance(c, MessageDeleted)]
    assert log(ops.TickOp(T0 + 1000, 100)) == [{"released": 0, "expired": 0}]  # nothing was held back


def test_node_storage_limit_counts_all_mailboxes_and_the_same_batch(machine):
    m, _ = machine
    log = Log(m)
    log(ops.CreateOp("other", T0, 0, False, ""))
    assert log(ops.AppendOp("other", 1, T0, b"a" * 30, None), limited(b"b" * 20, max_total_bytes=60),
               limited(b"c" * 11, max_total_bytes=60), limited(b"c" * 10, max_total_bytes=60)) == [
        {"msg_id": 1}, {"msg_id": 1},
        {"error": "storage is full: 50 bytes stored in all mailboxes, this message of 11 would pass "
                  "the limit of 60"},
        {"msg_id": 2}]


def test_send_written_before_the_limits_existed_still_decodes():
    import msgpack
    old = msgpack.packb([ops.OP_SEND, "box", 1, T0, b"p", None, "", [], 0, 0], use_bin_type=True)
    assert ops.decode(old) == ops.SendOp("box", 1, T0, b"p", None, "", [], 0, 0, 0, 0)


def test_a_keyed_send_to_a_full_mailbox_counts_the_message_it_replaces(machine):
    m, _ = machine
    log = Log(m)
    assert log(limited(b"a" * 50, max_bytes=100, key="k"), limited(b"b" * 50, max_bytes=100)) == [
        {"msg_id": 1}, {"msg_id": 2}]
    assert log(limited(b"A" * 50, max_bytes=100, key="k"), limited(b"A" * 40, max_bytes=100, key="k")) == [
        {"msg_id": 3}, {"msg_id": 4}]  # the second replaces the first of the same batch
    assert "is full" in log(limited(b"A" * 51, max_bytes=100, key="k"))[0]["error"]
    assert "storage is full" in log(limited(b"A" * 51, max_total_bytes=100, key="k"))[0]["error"]
    assert log(limited(b"A" * 50, max_total_bytes=100, key="k")) == [{"msg_id": 5}]
    assert "is full" in log(limited(b"A" * 10, max_bytes=100, key="k", delay_ms=10))[0]["error"]
    assert [(msg.msg_id, msg.payload[:1]) for msg in m.store.iter_messages("box")] == [(2, b"b"), (5, b"A")]
