"""The chaos checker on hand-made histories: each finding on the smallest history that shows it."""

from __future__ import annotations

from typing import Any

import pytest

from chaos.checker import GATES, check, in_order, loss_positions, Sends
from chaos.history import Recorder, operations


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class H:
    """A history builder with a hand-driven clock: ``at(t)`` moves time, the rest record ops."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.rec = Recorder(self.clock)
        self.open: dict[str, dict] = {}

    def at(self, t: float) -> H:
        self.clock.t = t
        return self

    def invoke(self, process: str, f: str, node: str, **value: Any) -> H:
        self.open[process] = self.rec.invoke(process, f, node, value)
        return self

    def done(self, process: str, type_: str = "ok", **value: Any) -> H:
        self.rec.complete(self.open.pop(process), type_, value)
        return self

    def send(self, t0: float, t1: float, uid: str, msg_id: int | None, box: str = "a", prio: str = "normal",
             type_: str = "ok", node: str = "n1", process: str | None = None) -> H:
        process = process or uid.split("-")[0]
        self.at(t0).invoke(process, "send", node, mailbox=box, priority=prio, uid=uid)
        value = {"msg_id": msg_id} if type_ == "ok" else {"error": "timeout"}
        return self.at(t1).done(process, type_, **value)

    def final(self, t: float, node: str, boxes: dict[str, list[list[Any]]]) -> H:
        return self.at(t).invoke("final", "final-read", node).done("final", mailboxes=boxes)

    def fault(self, t: float, f: str, **value: Any) -> H:
        self.at(t).rec.fault(f, value)
        return self

    @property
    def entries(self) -> list[dict]:
        return self.rec.entries


def three_sends() -> H:
    return (H().send(1, 2, "p0-1", 1).send(2, 3, "p0-2", 2, prio="critical").send(3, 4, "p0-3", 3))


FULL = {"a": [[2, "critical", "p0-2"], [1, "normal", "p0-1"], [3, "normal", "p0-3"]]}


def test_a_clean_history_passes_every_gate() -> None:
    h = three_sends().final(10, "n1", FULL).final(11, "n2", FULL)
    verdict = check(h.entries)
    assert verdict.valid, verdict.counts
    assert verdict.counts["attempted"] == 3 and verdict.counts["acknowledged"] == 3
    assert all(not verdict.counts.get(gate) for gate in GATES)


def test_operations_pair_by_process_and_an_unfinished_one_is_unknown() -> None:
    h = H().at(1).invoke("p0", "send", "n1", mailbox="a", priority="low", uid="p0-1")
    h.at(1.5).invoke("p1", "send", "n2", mailbox="a", priority="low", uid="p1-1").at(2).done("p1", msg_id=1)
    ops = operations(h.entries)
    assert [(op.process, op.type) for op in ops] == [("p0", "info"), ("p1", "ok")]
    assert ops[0].end == float("inf") and ops[1].value["msg_id"] == 1


def test_a_process_cannot_invoke_twice_without_completing() -> None:
    h = H().invoke("p0", "send", "n1", uid="x").invoke("p9", "send", "n1", uid="y")
    h.rec.invoke("p0", "send", "n1", {"uid": "z"})
    with pytest.raises(ValueError):
        operations(h.entries)


def test_lost_message_counted_once_and_per_node_that_lacks_it() -> None:
    partial = {"a": [[2, "critical", "p0-2"], [3, "normal", "p0-3"]]}
    verdict = check(three_sends().final(10, "n1", partial).final(11, "n2", partial).final(12, "n3", FULL).entries)
    assert verdict.counts["lost"] == 1
    assert verdict.counts["lost_by_node"] == {"n1": 1, "n2": 1}
    assert verdict.counts["lost_by_kind"] == {"prefix": 1, "middle": 0, "postfix": 0}
    assert verdict.counts["divergence"] == 1
    assert not verdict.valid and "lost" in verdict.failed_gates()


def test_loss_positions_prefix_middle_postfix_per_producer() -> None:
    h = H()
    for i in range(1, 6):
        h.send(i, i + 0.5, f"p0-{i}", i)
    h.send(1, 1.5, "p1-1", 9)
    sends = Sends.of(operations(h.entries))
    assert loss_positions(sends, {}, {"p0-1", "p0-3", "p0-5", "p1-1"}) == {"prefix": 2, "middle": 1, "postfix": 1}


def test_unknown_sends_may_be_missing_and_count_as_recovered_when_present() -> None:
    h = three_sends().send(5, 6, "p1-1", None, type_="info").send(5, 6, "p2-1", None, type_="info")
    boxes = {"a": FULL["a"] + [[4, "normal", "p1-1"]]}
    verdict = check(h.final(10, "n1", boxes).entries)
    assert verdict.valid, verdict.examples
    assert verdict.counts["recovered"] == 1 and verdict.counts["unknown"] == 2


def test_a_message_nobody_sent_is_a_phantom() -> None:
    boxes = {"a": FULL["a"] + [[4, "low", "ghost"]]}
    verdict = check(three_sends().final(10, "n1", boxes).entries)
    assert verdict.counts["phantom"] == 1 and "phantom" in verdict.failed_gates()


def test_stored_under_another_msg_id_than_acknowledged_is_misnumbered() -> None:
    boxes = {"a": [[2, "critical", "p0-2"], [1, "normal", "p0-1"], [4, "normal", "p0-3"]]}
    verdict = check(three_sends().final(10, "n1", boxes).entries)
    assert verdict.counts["misnumbered"] == 1


def test_one_send_stored_twice_is_a_duplicate() -> None:
    boxes = {"a": FULL["a"] + [[4, "normal", "p0-3"]]}
    verdict = check(three_sends().final(10, "n1", boxes).entries)
    assert verdict.counts["duplicates"] >= 1 and "duplicates" in verdict.failed_gates()


def test_a_replay_that_delivers_one_message_twice_is_a_duplicate() -> None:
    h = three_sends().at(5).invoke("r0", "replay", "n2", mailbox="a")
    h.at(6).done("r0", deliveries=[[1, "normal", "p0-1"], [1, "normal", "p0-1"]], complete=False)
    verdict = check(h.final(10, "n1", FULL).entries)
    assert verdict.counts["duplicates"] == 1


def delete(h: H, t0: float, t1: float, uid: str, msg_id: int, type_: str = "ok") -> H:
    h.at(t0).invoke("d", "delete", "n2", mailbox="a", msg_id=msg_id, uid=uid)
    return h.at(t1).done("d", type_, **({} if type_ == "ok" else {"error": "timeout"}))


def test_deleted_messages_are_not_lost_and_must_not_come_back() -> None:
    h = delete(three_sends(), 5, 6, "p0-1", 1)
    after = {"a": [[2, "critical", "p0-2"], [3, "normal", "p0-3"]]}
    assert check(h.final(10, "n1", after).entries).valid
    back = check(delete(three_sends(), 5, 6, "p0-1", 1).final(10, "n1", FULL).entries)
    assert back.counts["returned_deletes"] == 1


def test_a_delete_of_unknown_outcome_may_or_may_not_have_happened() -> None:
    for boxes in (FULL, {"a": FULL["a"][:1] + FULL["a"][2:]}):
        assert check(delete(three_sends(), 5, 6, "p0-1", 1, "info").final(10, "n1", boxes).entries).valid


def test_a_replay_begun_after_a_delete_was_acknowledged_must_not_show_it() -> None:
    h = delete(three_sends(), 5, 6, "p0-1", 1)
    h.at(5.5).invoke("r0", "replay", "n3", mailbox="a")  # began before the ack: may show it
    h.at(6.5).done("r0", deliveries=FULL["a"], complete=True)
    after = {"a": [[2, "critical", "p0-2"], [3, "normal", "p0-3"]]}
    assert check(h.final(10, "n1", after).entries).valid
    h.at(7).invoke("r0", "replay", "n3", mailbox="a").at(8).done("r0", deliveries=FULL["a"], complete=True)
    assert check(h.final(11, "n2", after).entries).counts["returned_deletes"] == 1


def test_inversions_only_among_messages_acknowledged_before_the_replay_began() -> None:
    h = three_sends().send(4.5, 7, "p1-1", 4, prio="critical")
    # p1-1 was acknowledged after the replay began: it may arrive live, after lower priorities
    h.at(5).invoke("r0", "replay", "n2", mailbox="a")
    h.at(6).done("r0", deliveries=FULL["a"] + [[4, "critical", "p1-1"]], complete=True)
    final = {"a": [[2, "critical", "p0-2"], [4, "critical", "p1-1"], [1, "normal", "p0-1"], [3, "normal", "p0-3"]]}
    assert check(h.final(10, "n1", final).entries).counts["inversions"] == 0
    h.at(11).invoke("r1", "replay", "n2", mailbox="a")
    h.at(12).done("r1", deliveries=[[1, "normal", "p0-1"], [2, "critical", "p0-2"], [3, "normal", "p0-3"]],
                  complete=True)
    verdict = check(h.entries)
    assert verdict.counts["inversions"] == 1 and "inversions" in verdict.failed_gates()


def test_in_order_is_priority_then_fifo() -> None:
    assert in_order([[5, "critical", "x"], [1, "urgent", "y"], [2, "normal", "z"], [3, "low", "w"]]) == []
    assert in_order([[2, "normal", "x"], [1, "normal", "y"]]) == [([2, "normal", "x"], [1, "normal", "y"])]


def replay(h: H, t0: float, t1: float, deliveries: list, node: str = "n2", complete: bool = True) -> H:
    h.at(t0).invoke("r0", "replay", node, mailbox="a")
    return h.at(t1).done("r0", deliveries=deliveries, complete=complete)


def test_a_served_replay_missing_an_acknowledged_message_is_stale() -> None:
    verdict = check(replay(three_sends(), 5, 6, FULL["a"][:2]).final(10, "n1", FULL).entries)
    assert verdict.counts["stale_replays"] == 1 and "stale_replays" in verdict.failed_gates()


def test_empty_cut_short_or_paused_replays_are_not_judged_stale() -> None:
    for h in (replay(three_sends(), 5, 6, []), replay(three_sends(), 5, 6, FULL["a"][:2], complete=False),
              replay(three_sends().fault(4.5, "pause", nodes=["n2"]).fault(5.5, "resume", nodes=["n2"]),
                     5, 6, FULL["a"][:2])):
        verdict = check(h.final(10, "n1", FULL).entries)
        assert verdict.counts["stale_replays"] == 0, verdict.examples


def test_acknowledgements_and_reads_from_an_isolated_minority_are_flagged() -> None:
    h = three_sends().fault(5, "partition", sides=[["n3"], ["n1", "n2"]])
    h.send(6, 7, "p1-1", 4, node="n2")  # majority side: fine
    h.send(6, 7, "p2-1", 5, node="n3")  # minority side, invoked and acknowledged inside the cut
    h.send(4.9, 5.5, "p3-1", 6, node="n3")  # invoked before the cut: may have committed
    replay(h, 7, 8, FULL["a"], node="n3")
    h.fault(9, "heal")
    final = {"a": FULL["a"] + [[4, "normal", "p1-1"], [5, "normal", "p2-1"], [6, "normal", "p3-1"]]}
    verdict = check(h.final(10, "n1", final).entries)
    assert verdict.counts["minority_acks"] == 2
    assert {e["f"] for e in verdict.examples["minority_acks"]} == {"send", "replay"}


def test_replicas_that_disagree_diverge_and_creates_must_be_everywhere() -> None:
    h = three_sends().at(0.5).invoke("c", "create", "n1").at(0.8).done("c", mailbox="b")
    verdict = check(h.final(10, "n1", {**FULL, "b": []}).final(11, "n2", FULL).entries)
    assert verdict.counts["divergence"] == 1
    assert verdict.counts["invisible_creates"] == 1


def test_a_queue_group_message_given_to_two_workers_is_a_duplicate() -> None:
    h = three_sends()
    for worker, got in (("w0", [[1, "normal", "p0-1"]]), ("w1", [[1, "normal", "p0-1"], [2, "critical", "p0-2"]])):
        h.at(5).invoke(worker, "work", "n1", mailbox="a").at(6).done(worker, deliveries=got)
    verdict = check(h.final(10, "n1", FULL).entries)
    assert verdict.counts["queue_duplicates"] == 1 and verdict.counts["queue_delivered"] == 2


def test_unavailability_and_failover_from_acknowledgement_times() -> None:
    h = H()
    h.rec.add("info", "workload", "start")
    h.send(0, 1, "p0-1", 1)
    h.fault(1.5, "kill", nodes=["n1"], leader_loss=True)
    h.send(1.2, 4, "p0-2", 2)  # invoked before the fault: not a failover measure
    h.send(2, 4.5, "p0-3", 3)
    h.at(5).rec.add("info", "workload", "stop")
    verdict = check(h.final(10, "n2", {"a": [[1, "normal", "p0-1"], [2, "normal", "p0-2"], [3, "normal", "p0-3"]]})
                    .entries)
    assert verdict.counts["unavailable_longest"] == 3.0  # from 1 to 4
    assert verdict.counts["unavailable_total"] == 4.0  # and the first second
    assert verdict.counts["failovers"] == [3.0]
    assert verdict.counts["slow_failovers"] == 0
    assert check(h.entries, failover_limit=2.0).counts["slow_failovers"] == 1


def test_a_history_without_final_reads_cannot_pass() -> None:
    assert "no_final_read" in check(three_sends().entries).failed_gates()


def test_messages_of_a_mailbox_whose_ttl_ran_out_may_be_gone() -> None:
    def history(ttl: int) -> H:
        h = H().at(0.5).invoke("c", "create", "n1", ttl=ttl).at(0.8).done("c", mailbox="a")
        h.send(1, 2, "p0-1", 1)
        return h.final(10, "n1", {})

    assert check(history(5).entries).valid  # expired by 5.5, read at 10
    early = check(history(60).entries)
    assert early.counts["lost"] == 1 and early.counts["invisible_creates"] == 1


def test_a_send_refused_as_not_committed_must_not_be_stored() -> None:
    h = three_sends().send(5, 6, "p1-1", None, type_="fail")
    assert check(h.final(10, "n1", FULL).entries).valid
    stored = check(h.final(11, "n2", {"a": FULL["a"] + [[4, "normal", "p1-1"]]}).entries)
    assert stored.counts["failed_present"] == 1 and "failed_present" in stored.failed_gates()


def test_the_workload_tells_definite_failures_from_unknown_outcomes() -> None:
    from chaos.workload import _judge_send

    assert _judge_send({"msg_id": 3}) == ("ok", {"msg_id": 3})
    assert _judge_send({"error": "not committed: no leader known for 1.0 s; retry"})[0] == "fail"
    assert _judge_send({"error": "mailbox a does not exist"})[0] == "fail"
    assert _judge_send({"error": "outcome unknown, it may still be committed: timed out; retry"})[0] == "info"


def test_corruption_outcomes_tell_refusals_from_nodes_that_went_on() -> None:
    from chaos.report import corruption_outcomes, corruption_table

    h = H().fault(1, "corrupt", nodes=["n2"], kind="journal", mode="bitflip", done={"file": "raft/journal"})
    h.fault(2, "refused", nodes=["n2"], why="JournalCorrupt")
    h.fault(3, "corrupt", nodes=["n1"], kind="wal", mode="truncate", done={"file": "store/000009.log"})
    h.fault(4, "corrupt", nodes=["n3"], kind="sst", mode="bitflip", done=None)
    h.fault(5, "corrupt", nodes=["n2"], kind="meta", mode="truncate", done={"file": "raft/journal.meta"})
    h.fault(6, "refused", nodes=["n2"], why="JournalCorrupt")
    h.fault(7, "rebuilt", nodes=["n2"], seconds=0.4)
    outcomes = corruption_outcomes(h.entries)
    assert outcomes == [("journal", "bitflip", "refused"), ("wal", "truncate", "started"),
                        ("sst", "bitflip", "nothing"), ("meta", "truncate", "rebuilt")]
    assert "| meta | truncate | 1 | 1 | 0 | 0 |" in corruption_table(outcomes)


def test_the_wind_down_after_the_last_send_is_not_unavailability() -> None:
    h = H()
    h.rec.add("info", "workload", "start")
    h.send(0, 1, "p0-1", 1)
    h.send(1.5, 13.5, "p1-1", None, type_="info")  # to a dead node: runs into its time-out
    h.at(14).rec.add("info", "workload", "stop")
    verdict = check(h.final(20, "n2", {"a": [[1, "normal", "p0-1"]]}).entries)
    assert verdict.counts["unavailable_total"] == 1.0  # the first second only: the window ends at 1.5
