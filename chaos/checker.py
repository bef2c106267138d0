"""The verdict on a chaos history: pure functions from entries (see ``history.py``) to findings.

A delivery, in replays and final reads, is ``[msg_id, priority, uid]``: the broker's id, the
priority name from the ``mq9-priority`` header and the payload (the producer's unique id).

What is checked, and what counts as what:

- **lost**: an acknowledged send (``ok``), never the target of a delete that may have happened,
  absent from a node's final state (unless its mailbox's TTL, counted by a true clock from the
  create's invocation, may have run out before the final reads). Counted once per message, and once per node that lacks it;
  per producer process it is a *prefix* (no kept acknowledged send of that process before it),
  *postfix* (none after it) or *middle* loss.
- **phantom**: a uid delivered anywhere that no send ever carried.
- **recovered**: an unknown send (``info``) that is in the final state (fine either way).
- **failed present**: a send the broker answered with a definite failure (``fail``: "not
  committed", "does not exist") that was stored all the same.
- **returned delete**: an acknowledged delete whose message is in a final state or in a replay
  that began after the delete was acknowledged.
- **duplicate**: one uid or msg_id twice in one replay or final read, or one uid stored under
  two msg_ids; also a queue-group message given to two workers (or twice to one).
- **inversion**: in one replay, two messages that were both acknowledged before the replay
  began, delivered out of (priority, msg_id) order.
- **stale replay**: a replay that was served (delivered something, ended quietly, its node was
  not paused meanwhile) but missed a message acknowledged before it began and never deleted.
- **minority ack / read**: an ``ok`` send, create or delete, or a served replay, through a node
  that was cut off from the majority for the whole operation (invoked after the partition
  began, done before it healed): its entry could not have reached a quorum.
- **divergence**: two nodes whose final states differ (mailbox by mailbox).
- **invisible create**: an acknowledged create missing from a node's final state.
- **misnumbered**: a send acknowledged with one msg_id and stored under another.
- **nodes exited** and **run error** (set by the runner): a node that stopped by itself (it
  refused its data, or crashed), or a run that broke off, fails the run too.
- **unavailable**: gaps of at least ``gap`` seconds with no acknowledged send; **failover**:
  from a leader-loss fault to the first acknowledgement of a send invoked after it;
  **recovery**: the nemesis's measured catch-up time after each heal.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chaos.history import Entry, Operation, faults, operations

PRIORITY_RANK = {"critical": 0, "urgent": 1, "high": 1, "normal": 2, "low": 3}
GATES = ("lost", "phantom", "failed_present", "returned_deletes", "duplicates", "inversions", "stale_replays",
         "minority_acks", "divergence", "invisible_creates", "misnumbered", "queue_duplicates",
         "slow_failovers", "no_final_read", "nodes_exited", "run_error")


@dataclass
class Sends:
    """Every send of a history, by uid."""

    by_uid: dict[str, Operation]

    @classmethod
    def of(cls, ops: Iterable[Operation]) -> Sends:
        return cls({op.invoke["value"]["uid"]: op for op in ops if op.f == "send"})

    def acked(self) -> dict[str, Operation]:
        return {uid: op for uid, op in self.by_uid.items() if op.type == "ok"}


@dataclass
class Verdict:
    """Counts for the report table, examples for the reader, and whether the run passed."""

    counts: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return all(not self.counts.get(gate) for gate in GATES)

    def failed_gates(self) -> list[str]:
        return [gate for gate in GATES if self.counts.get(gate)]

    def note(self, kind: str, example: Any, limit: int = 10) -> None:
        bucket = self.examples.setdefault(kind, [])
        if len(bucket) < limit:
            bucket.append(example)


def final_states(ops: Iterable[Operation]) -> dict[str, dict[str, list[list[Any]]]]:
    """Node -> mailbox -> deliveries, from the successful final reads (the last one per node)."""
    states: dict[str, dict[str, list[list[Any]]]] = {}
    for op in ops:
        if op.f == "final-read" and op.type == "ok":
            states[op.node] = op.value["mailboxes"]
    return states


def deleted_uids(ops: Iterable[Operation], maybe: bool) -> dict[str, Operation]:
    """uid -> delete op: acknowledged ones, or (``maybe``) every one that may have happened."""
    kinds = ("ok", "info") if maybe else ("ok",)
    return {op.value["uid"]: op for op in ops if op.f == "delete" and op.type in kinds}


def expiries(ops: Iterable[Operation]) -> dict[str, float]:
    """Mailbox -> the earliest run time at which its TTL may have removed it (by a true clock)."""
    return {op.value["mailbox"]: op.start + op.value["ttl"] for op in ops
            if op.f == "create" and op.type == "ok" and op.value.get("ttl")}


def check_lost(sends: Sends, deletes: dict[str, Operation], states: dict[str, dict], verdict: Verdict,
               expire: dict[str, float] | None = None, read_at: float = float("inf")) -> None:
    """Lost acknowledged messages, per node and per producer position (expired mailboxes aside)."""
    present = {node: {d[2] for deliveries in state.values() for d in deliveries} for node, state in states.items()}
    by_node: Counter[str] = Counter()
    lost: set[str] = set()
    expire = expire or {}
    for uid, op in sends.acked().items():
        if uid in deletes or expire.get(op.value["mailbox"], float("inf")) <= read_at:
            continue
        for node, uids in present.items():
            if uid not in uids:
                by_node[node] += 1
                lost.add(uid)
                verdict.note("lost", {"uid": uid, "node": node, "msg_id": op.value.get("msg_id"),
                                      "mailbox": op.value["mailbox"], "acked_at": op.end, "via": op.node})
    kinds = loss_positions(sends, deletes, lost)
    verdict.counts.update(lost=len(lost), lost_by_node=dict(sorted(by_node.items())), lost_by_kind=kinds)


def loss_positions(sends: Sends, deletes: dict[str, Operation], lost: set[str]) -> dict[str, int]:
    """Split lost messages by where they stand among their producer's acknowledged sends."""
    streams: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for uid, op in sends.acked().items():
        if uid not in deletes:
            streams[op.process].append((op.start, uid))
    kinds = Counter({"prefix": 0, "middle": 0, "postfix": 0})
    for stream in streams.values():
        uids = [uid for _, uid in sorted(stream)]
        kept = [i for i, uid in enumerate(uids) if uid not in lost]
        for i, uid in enumerate(uids):
            if uid in lost:
                if not kept or i < kept[0]:
                    kinds["prefix"] += 1
                elif i > kept[-1]:
                    kinds["postfix"] += 1
                else:
                    kinds["middle"] += 1
    return dict(kinds)


def delivered(ops: Iterable[Operation]) -> Iterable[tuple[Operation, list[Any]]]:
    """(op, delivery) for every delivery in replays, final reads and queue-group work."""
    for op in ops:
        if op.f in ("replay", "work") and op.type == "ok":
            for d in op.value["deliveries"]:
                yield op, d
        elif op.f == "final-read" and op.type == "ok":
            for deliveries in op.value["mailboxes"].values():
                for d in deliveries:
                    yield op, d


def check_phantoms_and_numbers(ops: list[Operation], sends: Sends, verdict: Verdict) -> None:
    phantom: set[str] = set()
    misnumbered: set[str] = set()
    ids_of: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for op, (msg_id, _, uid) in delivered(ops):
        send = sends.by_uid.get(uid)
        if send is None:
            phantom.add(uid)
            verdict.note("phantom", {"uid": uid, "msg_id": msg_id, "in": op.f, "node": op.node})
            continue
        ids_of[uid].add((send.invoke["value"]["mailbox"], msg_id))
        if send.type == "ok" and send.value.get("msg_id") != msg_id:
            misnumbered.add(uid)
            verdict.note("misnumbered", {"uid": uid, "acked": send.value.get("msg_id"), "stored": msg_id})
    twice = [uid for uid, ids in ids_of.items() if len(ids) > 1]
    for uid in twice:
        verdict.note("duplicates", {"uid": uid, "stored_as": sorted(ids_of[uid])})
    recovered = sum(1 for uid, op in sends.by_uid.items() if op.type == "info" and uid in ids_of)
    failed_present = [uid for uid, op in sends.by_uid.items() if op.type == "fail" and uid in ids_of]
    for uid in failed_present[:10]:
        verdict.note("failed_present", {"uid": uid, "error": sends.by_uid[uid].value.get("error")})
    verdict.counts.update(phantom=len(phantom), misnumbered=len(misnumbered), recovered=recovered,
                          failed_present=len(failed_present))
    verdict.counts["duplicates"] = verdict.counts.get("duplicates", 0) + len(twice)


def check_read_duplicates(ops: Iterable[Operation], verdict: Verdict) -> None:
    """One uid or msg_id twice within one replay or one mailbox of a final read."""
    count = 0
    for op in ops:
        if op.type != "ok":
            continue
        if op.f == "replay":
            reads = [(op.value["mailbox"], op.value["deliveries"])]
        elif op.f == "final-read":
            reads = list(op.value["mailboxes"].items())
        else:
            continue
        for mailbox, deliveries in reads:
            extra = {label: {k: n for k, n in Counter(d[key] for d in deliveries).items() if n > 1}
                     for key, label in ((0, "msg_id"), (2, "uid"))}
            if any(extra.values()):
                count += 1
                verdict.note("duplicates", {"in": op.f, "node": op.node, "mailbox": mailbox, **extra})
    verdict.counts["duplicates"] = verdict.counts.get("duplicates", 0) + count


def check_queue_group(ops: Iterable[Operation], verdict: Verdict) -> None:
    """Each queue-group message to one worker, once."""
    given: dict[tuple[str, int], list[str]] = defaultdict(list)
    for op in ops:
        if op.f == "work" and op.type == "ok":
            for msg_id, _, uid in op.value["deliveries"]:
                given[(op.value["mailbox"], msg_id)].append(op.process)
    twice = {key: who for key, who in given.items() if len(who) > 1}
    for (mailbox, msg_id), who in list(twice.items())[:10]:
        verdict.note("queue_duplicates", {"mailbox": mailbox, "msg_id": msg_id, "workers": who})
    verdict.counts.update(queue_duplicates=len(twice), queue_delivered=len(given))


def check_deletes(ops: list[Operation], states: dict[str, dict], verdict: Verdict) -> None:
    """Acknowledged deletes that come back, in final states or in replays begun after the ack."""
    acked = deleted_uids(ops, maybe=False)
    returned: set[str] = set()
    for node, state in states.items():
        for deliveries in state.values():
            for _, _, uid in deliveries:
                if uid in acked:
                    returned.add(uid)
                    verdict.note("returned_deletes", {"uid": uid, "node": node, "in": "final-read"})
    for op in ops:
        if op.f == "replay" and op.type == "ok":
            for _, _, uid in op.value["deliveries"]:
                delete = acked.get(uid)
                if delete is not None and delete.end < op.start:
                    returned.add(uid)
                    verdict.note("returned_deletes", {"uid": uid, "node": op.node, "in": "replay",
                                                      "deleted_at": delete.end, "replay_at": op.start})
    verdict.counts["returned_deletes"] = len(returned)


def in_order(deliveries: list[list[Any]]) -> list[tuple[list[Any], list[Any]]]:
    """Adjacent pairs that break (priority, msg_id) order."""
    keys = [(PRIORITY_RANK[d[1]], d[0]) for d in deliveries]
    return [(deliveries[i], deliveries[i + 1]) for i in range(len(keys) - 1) if keys[i] > keys[i + 1]]


def pause_windows(history: Iterable[Entry], end: float) -> dict[str, list[tuple[float, float]]]:
    """Node -> intervals during which it was paused (or down)."""
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    since: dict[str, float] = {}
    for entry in faults(history):
        for node in (entry["value"] or {}).get("nodes", []):
            if entry["f"] in ("pause", "kill", "power-off") and node not in since:
                since[node] = entry["time"]
            elif entry["f"] in ("resume", "start", "join") and node in since:
                windows[node].append((since.pop(node), entry["time"]))
    for node, start in since.items():
        windows[node].append((start, end))
    return windows


def check_replays(history: list[Entry], ops: list[Operation], sends: Sends, verdict: Verdict) -> None:
    """Inversions among messages acknowledged before a replay began; stale replays."""
    maybe_deleted = deleted_uids(ops, maybe=True)
    end = max((e["time"] for e in history), default=0.0)
    paused = pause_windows(history, end)
    acked_by_box: dict[str, list[Operation]] = defaultdict(list)
    for op in sends.acked().values():
        acked_by_box[op.value["mailbox"]].append(op)
    inversions = stale = served = 0
    for op in ops:
        if op.f not in ("replay", "final-read") or op.type != "ok":
            continue
        reads = [(op.value["mailbox"], op.value["deliveries"])] if op.f == "replay" else op.value["mailboxes"].items()
        for mailbox, deliveries in reads:
            before = [d for d in deliveries if _acked_before(sends, d[2], op.start)]
            for pair in in_order(before):
                inversions += 1
                verdict.note("inversions", {"node": op.node, "mailbox": mailbox, "at": op.start, "pair": pair})
            if op.f != "replay" or not deliveries or not op.value.get("complete"):
                continue
            served += 1
            if any(a < op.end and op.start < b for a, b in paused.get(op.node, [])):
                continue
            got = {d[2] for d in deliveries}
            missing = [s.value["uid"] for s in acked_by_box.get(mailbox, [])
                       if s.end < op.start and s.value["uid"] not in got
                       and maybe_deleted.get(s.value["uid"], _NEVER).start >= op.end]
            if missing:
                stale += 1
                verdict.note("stale_replays", {"node": op.node, "mailbox": mailbox, "at": op.start,
                                               "missing": missing[:5], "n_missing": len(missing)})
    verdict.counts.update(inversions=inversions, stale_replays=stale, replays_served=served)


class _Never:
    start = float("inf")


_NEVER = _Never()


def _acked_before(sends: Sends, uid: str, t: float) -> bool:
    op = sends.by_uid.get(uid)
    return op is not None and op.type == "ok" and op.end < t


def isolation_windows(history: Iterable[Entry], end: float) -> dict[str, list[tuple[float, float]]]:
    """Node -> intervals during which a symmetric partition left it outside every majority."""
    windows: dict[str, list[tuple[float, float]]] = defaultdict(list)
    open_: dict[str, float] = {}
    for entry in faults(history):
        value = entry["value"] or {}
        if entry["f"] == "partition":
            total = sum(len(side) for side in value["sides"])
            for side in value["sides"]:
                if 2 * len(side) <= total:
                    for node in side:
                        open_.setdefault(node, entry["time"])
        elif entry["f"] == "heal":
            for node, start in open_.items():
                windows[node].append((start, entry["time"]))
            open_.clear()
    for node, start in open_.items():
        windows[node].append((start, end))
    return windows


def check_minority(history: list[Entry], ops: list[Operation], verdict: Verdict) -> None:
    """Writes acknowledged, or replays served, by a node cut off from the majority throughout."""
    end = max((e["time"] for e in history), default=0.0)
    cut = isolation_windows(history, end)
    count = 0
    for op in ops:
        served = op.f == "replay" and op.type == "ok" and op.value.get("deliveries")
        acked = op.f in ("send", "create", "delete") and op.type == "ok"
        if not (served or acked) or op.node not in cut:
            continue
        if any(a <= op.start and op.end <= b for a, b in cut[op.node]):
            count += 1
            verdict.note("minority_acks", {"f": op.f, "node": op.node, "start": op.start, "end": op.end,
                                           "value": {k: v for k, v in op.value.items() if k != "deliveries"}})
    verdict.counts["minority_acks"] = count


def check_divergence(states: dict[str, dict], verdict: Verdict) -> None:
    """Every pair of final states must be equal, mailbox by mailbox."""
    nodes = sorted(states)
    boxes = sorted({box for state in states.values() for box in state})
    diverged = 0
    for box in boxes:
        views = {node: states[node].get(box) for node in nodes}
        distinct = {repr(view) for view in views.values()}
        if len(distinct) > 1:
            diverged += 1
            lengths = {node: None if view is None else len(view) for node, view in views.items()}
            verdict.note("divergence", {"mailbox": box, "messages_per_node": lengths})
    verdict.counts.update(divergence=diverged, nodes_compared=len(nodes))


def check_creates(ops: Iterable[Operation], states: dict[str, dict], verdict: Verdict, read_at: float) -> None:
    invisible = 0
    for op in ops:
        if op.f == "create" and op.type == "ok" and not (op.value.get("ttl") and op.start + op.value["ttl"] <= read_at):
            for node, state in states.items():
                if op.value["mailbox"] not in state:
                    invisible += 1
                    verdict.note("invisible_creates", {"mailbox": op.value["mailbox"], "node": node})
    verdict.counts["invisible_creates"] = invisible


def unavailable(sends: Sends, start: float, end: float, gap: float) -> list[tuple[float, float]]:
    """The intervals of at least ``gap`` seconds without an acknowledged send."""
    times = sorted(op.end for op in sends.acked().values() if start <= op.end <= end)
    edges = [start, *times, end]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b - a >= gap]


def failovers(history: Iterable[Entry], sends: Sends) -> list[float | None]:
    """Per leader-loss fault: seconds to the first acknowledgement of a send invoked after it."""
    acked = sorted((op.start, op.end) for op in sends.acked().values())
    out: list[float | None] = []
    for entry in faults(history):
        if (entry["value"] or {}).get("leader_loss"):
            after = [end for start, end in acked if start >= entry["time"]]
            out.append(round(min(after) - entry["time"], 2) if after else None)
    return out


def check_times(history: list[Entry], sends: Sends, verdict: Verdict, gap: float, failover_limit: float) -> None:
    marks = {e["f"]: e["time"] for e in history if e["process"] == "workload"}
    start, end = marks.get("start", 0.0), marks.get("stop", max((e["time"] for e in history), default=0.0))
    # up to the last send attempted or acknowledged: the workload's wind-down (no new requests,
    # those to a dead node running into their time-out) is not unavailability
    last = max((t for op in sends.by_uid.values() for t in (op.start, op.end if op.type == "ok" else op.start)),
               default=end)
    end = min(end, last)
    gaps = unavailable(sends, start, end, gap)
    lengths = [b - a for a, b in gaps]
    total, longest = round(sum(lengths), 2), round(max(lengths, default=0.0), 2)
    for a, b in gaps:
        verdict.note("unavailable", {"from": a, "to": b})
    times = failovers(history, sends)
    slow = [t for t in times if t is None or t > failover_limit]
    recoveries = [e["value"]["seconds"] for e in faults(history) if e["f"] == "recovered"]
    verdict.counts.update(unavailable_total=total, unavailable_longest=longest, failovers=times,
                          slow_failovers=len(slow), recoveries=recoveries)


def summarize_ops(ops: Iterable[Operation], verdict: Verdict) -> None:
    counts = Counter((op.f, op.type) for op in ops if op.f in ("send", "delete", "create", "replay"))
    verdict.counts.update(
        attempted=sum(n for (f, _), n in counts.items() if f == "send"),
        acknowledged=counts[("send", "ok")], unknown=counts[("send", "info")], failed=counts[("send", "fail")],
        deletes_acked=counts[("delete", "ok")], creates_acked=counts[("create", "ok")],
        replays=sum(n for (f, _), n in counts.items() if f == "replay"),
    )


def check(history: list[Entry], gap: float = 1.0, failover_limit: float = 5.0) -> Verdict:
    """Every check above on one history."""
    ops = operations(history)
    sends = Sends.of(ops)
    states = final_states(ops)
    verdict = Verdict()
    summarize_ops(ops, verdict)
    read_at = min((op.start for op in ops if op.f == "final-read"), default=float("inf"))
    check_lost(sends, deleted_uids(ops, maybe=True), states, verdict, expiries(ops), read_at)
    check_phantoms_and_numbers(ops, sends, verdict)
    check_read_duplicates(ops, verdict)
    check_queue_group(ops, verdict)
    check_deletes(ops, states, verdict)
    check_replays(history, ops, sends, verdict)
    check_minority(history, ops, verdict)
    check_divergence(states, verdict)
    check_creates(ops, states, verdict, read_at)
    check_times(history, sends, verdict, gap, failover_limit)
    if not states:
        verdict.counts["no_final_read"] = 1
    return verdict
