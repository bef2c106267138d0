"""The cluster clock on a real store, with hand-made ops: no single skewed clock decides a TTL."""

from __future__ import annotations

import pytest

from mq9cluster.mailbox import ops
from mq9cluster.mailbox.clock import SLACK_MS, STALE_ROUNDS, ClusterClock
from mq9cluster.mailbox.machine import MailboxMachine
from mq9cluster.store import Store

T0 = 1_700_000_000_000
HOUR = 3_600_000
A, B, C = "10.0.0.1:9000", "10.0.0.2:9000", "10.0.0.3:9000"


@pytest.fixture
def store(tmp_path):
    store = Store.open(tmp_path / "store")
    yield store
    store.close()


@pytest.fixture
def machine(store):
    return MailboxMachine(store, lambda changes: None)


class Log:
    """Entries at consecutive indexes, each with its own proposal id."""

    def __init__(self, machine: MailboxMachine) -> None:
        self.machine = machine
        self.index = 1

    def apply(self, *op_list: ops.Op) -> list[dict]:
        self.index += 1
        return self.machine.apply_batch(self.index, [ops.encode(op) for op in op_list], b"p%d" % self.index)


def clocks(log: Log, at: int, readings: dict[str, int], voters: int = 3) -> None:
    """One report from each node: its reading at true time ``at`` plus its skew."""
    log.apply(*(ops.ClockOp(node, at + skew, voters) for node, skew in readings.items()))


def test_one_clock_ahead_cannot_move_the_cluster_clock_past_the_majority(machine):
    log = Log(machine)
    clocks(log, T0, {A: 2 * HOUR, B: 0})
    assert machine.clock.now == T0  # two reporters of three: the second highest reading
    clocks(log, T0 + 1000, {A: 2 * HOUR, B: 0, C: -HOUR})
    assert machine.clock.now == T0 + 1000
    clocks(log, T0 + 2000, {A: 2 * HOUR})  # the skewed node alone keeps reporting
    assert machine.clock.now == T0 + 1000


def test_the_cluster_clock_never_goes_back(machine):
    log = Log(machine)
    clocks(log, T0, {A: 0, B: 0, C: 0})
    clocks(log, T0, {A: -HOUR, B: -HOUR})  # two clocks set back
    assert machine.clock.now == T0


def test_a_leader_far_ahead_expires_nothing_and_sends_still_land(machine):
    log = Log(machine)
    clocks(log, T0, {A: 0, B: 0, C: 0})
    assert log.apply(ops.CreateOp("box", T0, 600, False, "")) == [{"mail_address": "box", "is_new": True}]
    clocks(log, T0 + 3000, {A: 2 * HOUR, B: 0, C: 0})
    # what the skewed leader proposes: an expiry and a send, stamped two hours ahead
    assert log.apply(ops.ExpireOp("box", T0 + 2 * HOUR + 3000)) == [{"expired": False}]
    assert log.apply(ops.AppendOp("box", 1, T0 + 2 * HOUR + 3000, b"x", None)) == [{"msg_id": 1}]
    [message] = machine.store.iter_messages("box")
    assert message.ts_ms == T0 + 3000 + SLACK_MS  # its timestamp is bounded too
    clocks(log, T0 + 600_000, {A: 0, B: 0, C: 0})  # true time reaches the TTL
    assert log.apply(ops.ExpireOp("box", T0)) == [{"expired": True}]  # the stamp does not matter


def test_a_creator_far_behind_makes_no_born_expired_mailbox(machine):
    log = Log(machine)
    clocks(log, T0, {A: 0, B: 0, C: -2 * HOUR})
    assert log.apply(ops.CreateOp("late", T0 - 2 * HOUR, 60, True, "")) == [{"mail_address": "late", "is_new": True}]
    box = machine.store.get_mailbox("late")
    assert (box.created_at, box.expires_at) == (T0, T0 + 60_000)
    assert log.apply(ops.AppendOp("late", 1, T0 - 2 * HOUR, b"x", None)) == [{"msg_id": 1}]
    assert log.apply(ops.ExpireOp("late", T0 + 2 * HOUR)) == [{"expired": False}]


def test_dialect3_times_are_bounded_by_the_cluster_clock(machine):
    log = Log(machine)
    clocks(log, T0, {A: 0, B: 0, C: 0})
    log.apply(ops.CreateOp("d3", T0, 0, False, ""))
    ahead = T0 + 2 * HOUR
    kept = ops.SendOp("d3", 1, ahead, b"kept", None, "", [], 10_000, 0)
    held = ops.SendOp("d3", 1, ahead, b"held", None, "", [], 0, 5_000)
    assert log.apply(kept, held) == [{"msg_id": 1}, {"msg_id": -1}]
    log.apply(ops.TickOp(ahead, 100))  # a tick from the skewed leader removes and releases nothing
    assert [m.payload for m in machine.store.iter_messages("d3")] == [b"kept"]
    log.apply(ops.FetchOp("d3", "g", ahead, 10, "earliest", 0, False, 1_000))
    redelivered = log.apply(ops.FetchOp("d3", "g", ahead, 10, "earliest", 0, False, 0))
    assert redelivered == [{"messages": []}]  # its ack-wait is counted from a bounded time too
    clocks(log, T0 + 8_000, {A: 0, B: 0, C: 0})
    assert log.apply(ops.TickOp(T0 + 8_000, 100)) == [{"released": 1, "expired": 0}]
    clocks(log, T0 + 13_000, {A: 0, B: 0, C: 0})
    assert log.apply(ops.TickOp(T0 + 13_000, 100)) == [{"released": 0, "expired": 1}]
    assert [m.payload for m in machine.store.iter_messages("d3")] == [b"held"]


def test_a_single_node_is_its_own_majority(machine):
    log = Log(machine)
    log.apply(ops.ClockOp(A, T0, 1))
    assert machine.clock.now == T0
    log.apply(ops.CreateOp("solo", T0, 1, False, ""))
    log.apply(ops.ClockOp(A, T0 + 1000, 1))
    assert log.apply(ops.AppendOp("solo", 1, T0 + 1000, b"x", None)) == [{"error": "mailbox solo does not exist"}]


def test_before_any_report_ops_apply_by_their_stamps_as_old_logs_did(machine):
    log = Log(machine)
    log.apply(ops.CreateOp("old", T0, 1, False, ""))
    assert log.apply(ops.AppendOp("old", 1, T0 + 1000, b"x", None)) == [{"error": "mailbox old does not exist"}]
    assert log.apply(ops.ExpireOp("old", T0 + 1000)) == [{"expired": True}]


def test_a_silent_reporter_is_forgotten_after_many_reports(machine):
    log = Log(machine)
    clocks(log, T0, {A: 0, B: 0, C: 2 * HOUR})
    clock = machine.clock
    for i in range(STALE_ROUNDS * 3):  # B and C went away; A reports on (reports 4..93)
        clock = clock.after(ops.ClockOp(A, T0 + i, 3))
    assert set(clock.reporters) == {A, C}  # C was last heard at report 3: 90 reports ago, kept
    clock = clock.after(ops.ClockOp(A, T0 + 1000, 3))
    assert set(clock.reporters) == {A}  # a reading left behind no longer counts toward a majority
    clock = clock.after(ops.ClockOp(B, T0 + 2 * HOUR, 3))
    assert clock.now == T0 + 1000  # so a skewed B and C's old reading cannot make one


def test_reapplying_an_entry_changes_nothing(machine):
    log = Log(machine)
    clocks(log, T0, {A: 0, B: 0, C: 0})
    entry = [ops.encode(ops.ClockOp(A, T0 + 5000, 3)), ops.encode(ops.ClockOp(B, T0 + 5000, 3))]
    first = machine.apply_batch(10, entry, b"retry")
    state = machine.clock
    assert machine.apply_batch(11, entry, b"retry") == first  # a retried proposal: deduplicated
    assert machine.clock == state == ClusterClock.from_record(machine.store.get_clock())
    assert state.now == T0 + 5000


def test_a_restart_keeps_the_cluster_clock(tmp_path):
    store = Store.open(tmp_path / "store")
    log = Log(MailboxMachine(store, lambda changes: None))
    clocks(log, T0, {A: 0, B: 0, C: 0})
    log.apply(ops.CreateOp("box", T0, 60, False, ""))
    before = log.machine.clock
    store.close()
    store = Store.open(tmp_path / "store")
    try:
        machine = MailboxMachine(store, lambda changes: None)
        assert machine.clock == before and machine.clock.now == T0
        # a send stamped far ahead right after the restart is still judged by the cluster clock
        assert machine.apply_batch(store.last_applied() + 1, [ops.encode(ops.AppendOp(
            "box", 1, T0 + 2 * HOUR, b"x", None))]) == [{"msg_id": 1}]
    finally:
        store.close()


def test_two_nodes_applying_the_same_entries_hold_the_same_clock_and_mailboxes(tmp_path):
    entries = [
        [ops.ClockOp(A, T0 + 2 * HOUR, 3), ops.ClockOp(B, T0, 3)],
        [ops.CreateOp("box", T0 - HOUR, 60, True, ""), ops.ClockOp(C, T0 + 500, 3)],
        [ops.AppendOp("box", 1, T0 + 2 * HOUR, b"x", None), ops.ExpireOp("box", T0 + 2 * HOUR)],
    ]
    states = []
    for name in ("n1", "n2"):
        store = Store.open(tmp_path / name)
        try:
            machine = MailboxMachine(store, lambda changes: None)
            results = [machine.apply_batch(i + 2, [ops.encode(op) for op in entry]) for i, entry in enumerate(entries)]
            states.append((results, store.get_clock(), store.get_mailbox("box")))
        finally:
            store.close()
    assert states[0] == states[1]
    assert states[0][0][2] == [{"msg_id": 1}, {"expired": False}]
