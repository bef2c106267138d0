"""RaftNode on real pysyncobj, real journal files and loopback ports: one node and three."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from mq9cluster.cluster.raft import (
    MAX_ENTRY_BYTES,
    NOOP_ENTRY,
    NoQuorum,
    NotLeader,
    Op,
    ProposalFailed,
    RaftNode,
    RaftTuning,
)

FAST = RaftTuning(propose_timeout=2.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def entry(payload: bytes) -> bytes:
    return bytes([Op.BATCH]) + payload


class FileStateMachine:
    """Keeps applied entries in memory and its last applied index in a file, as a store would."""

    def __init__(self, path: Path, fail_on: bytes | None = None) -> None:
        self.path = path
        self.fail_on = fail_on
        self.applied: list[tuple[int, bytes]] = []
        self.last = json.loads(path.read_text())["last_applied"] if path.exists() else 0
        self.write_delay = 0.0
        self.installs = 0

    def apply(self, index: int, data: bytes) -> Any:
        assert index > self.last, "applied an entry at or below last_applied"
        if data == self.fail_on:
            raise RuntimeError("state machine bug")
        self.applied.append((index, data))
        self.last = index
        self.path.write_text(json.dumps({"last_applied": index}))
        return (index, len(data))

    def last_applied(self) -> int:
        return self.last

    def write_snapshot(self) -> JsonSnapshot:  # on the snapshot thread, while entries are applied
        applied = list(self.applied)
        last = applied[-1][0] if applied else self.last
        return JsonSnapshot(last, json.dumps({"last_applied": last, "applied": [
            [index, data.hex()] for index, data in applied]}).encode(), self.write_delay)

    def read_snapshot(self, stream: BinaryIO) -> None:
        state = json.loads(stream.read())
        self.applied = [(index, bytes.fromhex(data)) for index, data in state["applied"]]
        self.last = state["last_applied"]
        self.path.write_text(json.dumps({"last_applied": self.last}))
        self.installs += 1


class JsonSnapshot:
    """A captured FileStateMachine state; ``delay`` makes writing it out slow."""

    def __init__(self, index: int, data: bytes, delay: float) -> None:
        self.index = index
        self.data = data
        self.delay = delay

    def write_to(self, out: BinaryIO) -> None:
        time.sleep(self.delay)
        out.write(self.data)

    def discard(self) -> None:
        pass


class Cluster:
    """Starts RaftNodes on loopback ports, each with its own data dir; stops them all at the end."""

    def __init__(self, root: Path, size: int, tuning: RaftTuning = FAST, snapshots: bool = False) -> None:
        self.root = root
        self.tuning = tuning
        self.snapshots = snapshots
        self.addresses = [f"127.0.0.1:{free_port()}" for _ in range(size)]
        self.nodes: dict[str, RaftNode] = {}
        self.machines: dict[str, FileStateMachine] = {}

    def start(self, address: str, fail_on: bytes | None = None,
              on_fatal: Callable[[BaseException], None] | None = None) -> RaftNode:
        data = self.root / address.replace(":", "_")
        data.mkdir(exist_ok=True)
        machine = FileStateMachine(data / "last_applied.json", fail_on)
        hooks = {"snapshot_writer": machine.write_snapshot,
                 "snapshot_reader": machine.read_snapshot} if self.snapshots else {}
        node = RaftNode(address, self.addresses, str(data), machine.apply, machine.last_applied,
                        tuning=self.tuning, on_fatal=on_fatal, **hooks)
        self.nodes[address], self.machines[address] = node, machine
        return node

    def start_all(self) -> Cluster:
        for address in self.addresses:
            self.start(address)
        return self

    def leader(self, timeout: float = 5.0) -> RaftNode:
        found: list[RaftNode] = []

        def elected() -> bool:
            found[:] = [n for n in self.nodes.values() if n.status().role == "leader"]
            return len(found) == 1 and all(
                n.status().leader == found[0].address for n in self.nodes.values()
                if n.status().role != "stopped")

        wait_for(elected, timeout)
        return found[0]

    def stop(self, address: str) -> None:
        self.nodes[address].stop()

    def stop_all(self) -> None:
        for node in self.nodes.values():
            node.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(size: int = 1, **kwargs: Any) -> Cluster:
        made.append(Cluster(tmp_path, size, **kwargs))
        return made[-1]

    yield make
    for c in made:
        c.stop_all()


# -- one node ---------------------------------------------------------------------------------------


def test_propose_returns_apply_result_with_log_index(cluster: Callable[..., Cluster]) -> None:
    c = cluster(1).start_all()
    node = c.leader()
    index, size = node.propose(entry(b"hello")).result(5)
    assert size == 6
    assert c.machines[node.address].applied == [(index, entry(b"hello"))]
    assert node.status().last_applied >= index
    second, _ = node.propose(entry(b"again")).result(5)
    assert second > index


def test_sequential_async_proposals_do_not_wait_for_a_poll_period(cluster: Callable[..., Cluster]) -> None:
    c = cluster(1).start_all()
    node = c.leader()

    async def measure() -> list[float]:
        times = []
        for i in range(200):
            start = time.perf_counter()
            assert (await node.propose_async(entry(b"x" * 200)))[1] == 201
            times.append(time.perf_counter() - start)
        return times

    times = asyncio.run(measure())
    # Not a benchmark: pysyncobj's own tick would take 50-100 ms each; the tick thread is woken.
    assert statistics.median(times) < 0.05, f"median {statistics.median(times) * 1000:.1f} ms"
    assert [i for i, _ in c.machines[node.address].applied] == sorted(
        i for i, _ in c.machines[node.address].applied)


def test_a_taken_port_is_a_clear_error_and_leaves_the_journal_closed(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster(1)
    host, port = c.addresses[0].rsplit(":", 1)
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        with pytest.raises(OSError, match="cannot bind"):
            c.start(c.addresses[0])
    c.start(c.addresses[0])  # the journal was closed: it opens again
    assert c.leader().propose(entry(b"ok")).result(5)[1] == 3


def test_bad_entries_are_refused(cluster: Callable[..., Cluster]) -> None:
    node = cluster(1).start_all().leader()
    for bad in (b"", "text", bytes(MAX_ENTRY_BYTES + 1)):
        with pytest.raises(ValueError):
            node.propose(bad)  # type: ignore[arg-type]


def test_restart_replays_the_journal_but_skips_applied_entries(cluster: Callable[..., Cluster]) -> None:
    c = cluster(1).start_all()
    address = c.addresses[0]
    node = c.leader()
    indexes = [node.propose(entry(b"%d" % i)).result(5)[0] for i in range(5)]
    c.stop(address)

    c.start(address)  # the state machine reloads last_applied = indexes[-1] from its file
    node = c.leader()
    after, _ = node.propose(entry(b"after")).result(5)
    assert after > indexes[-1]
    assert c.machines[address].applied[0][1] == entry(b"after")  # nothing applied twice
    c.stop(address)

    # A store that lost its last two applies: pysyncobj replays the journal from the start and
    # exactly those two come again, at their own indexes (pysyncobj's no-ops never show up).
    (c.root / address.replace(":", "_") / "last_applied.json").write_text(
        json.dumps({"last_applied": indexes[2]}))
    c.start(address)
    node = c.leader()
    wait_for(lambda: len(c.machines[address].applied) >= 3)
    assert c.machines[address].applied[:3] == [
        (indexes[3], entry(b"3")), (indexes[4], entry(b"4")), (after, entry(b"after"))]


def test_read_barrier_is_a_noop_entry_shared_by_concurrent_callers(cluster: Callable[..., Cluster]) -> None:
    c = cluster(1).start_all()
    node = c.leader()
    index, _ = node.propose(entry(b"before")).result(5)
    log_before = node.status().log_entries

    async def barriers() -> None:
        await asyncio.gather(*(node.read_barrier() for _ in range(50)))
        await node.read_barrier()

    asyncio.run(barriers())
    assert node.status().last_applied > index
    assert node.status().log_entries - log_before <= 3  # 50 concurrent callers: one or two no-ops
    assert c.machines[node.address].applied == [(index, entry(b"before"))]  # no-ops not passed on
    assert node.propose(NOOP_ENTRY).result(5) is None


def test_an_exception_from_apply_stops_the_node(cluster: Callable[..., Cluster]) -> None:
    c = cluster(1)
    address = c.addresses[0]
    fatal = threading.Event()
    c.start(address, fail_on=entry(b"boom"), on_fatal=lambda exc: fatal.set())
    node = c.leader()
    with pytest.raises(ProposalFailed):
        node.propose(entry(b"boom")).result(5)
    assert fatal.wait(5)
    assert isinstance(node.failure, RuntimeError)
    assert node.status().role == "stopped"
    with pytest.raises(ProposalFailed):
        node.propose(entry(b"later")).result(1)


def _snapshotting_node(cluster: Callable[..., Cluster]) -> tuple[Cluster, str, RaftNode, Path]:
    """A one-node group that snapshots every 20 entries, 40 entries in: (cluster, address, node,
    the path of its snapshot file)."""
    c = cluster(1, tuning=RaftTuning(propose_timeout=2.0, snapshot_min_entries=20), snapshots=True)
    address = c.addresses[0]
    node = c.start(address)
    c.leader()
    for i in range(40):
        node.propose(entry(b"%d" % i)).result(5)
    return c, address, node, c.root / address.replace(":", "_") / "raft" / "snapshot"


def test_snapshot_compacts_the_log_and_restores_a_fresh_store(cluster: Callable[..., Cluster]) -> None:
    c, address, node, snapshot = _snapshotting_node(cluster)
    wait_for(snapshot.exists)
    wait_for(lambda: node.status().log_entries < 40)
    applied = list(c.machines[address].applied)
    c.stop(address)

    (c.root / address.replace(":", "_") / "last_applied.json").unlink()  # a store lost entirely
    c.start(address)
    node = c.leader()
    node.propose(entry(b"after")).result(5)
    assert c.machines[address].applied[: len(applied)] == applied
    assert c.machines[address].applied[-1][1] == entry(b"after")
    c.stop(address)

    data = bytearray(snapshot.read_bytes())
    data[-20] ^= 0xFF  # inside the state bytes (the last 12 bytes are length and CRC)
    snapshot.write_bytes(bytes(data))
    (c.root / address.replace(":", "_") / "last_applied.json").unlink()
    node = c.start(address)
    wait_for(lambda: node.status().role == "stopped")
    assert "checksum" in str(node.failure)


def test_a_snapshot_file_is_checked_before_it_is_sent_and_rewritten_if_damaged(
        cluster: Callable[..., Cluster]) -> None:
    from mq9cluster.cluster.raft import read_snapshot_meta, verified_snapshot_state

    c, address, node, snapshot = _snapshotting_node(cluster)
    wait_for(lambda: node.status().snapshots_written >= 1)
    time.sleep(0.5)  # no proposals any more: no further compaction
    written = node.status().snapshots_written
    assert node._snapshot_sendable()  # written and fsynced here: no need to read it again

    good = snapshot.read_bytes()
    os.utime(snapshot, ns=(1, 1))  # another version of the file, the same bytes
    assert not node._snapshot_sendable()  # read first, on a thread of its own
    wait_for(node._snapshot_sendable)
    assert snapshot.read_bytes() == good

    damaged = bytearray(good)
    damaged[-20] ^= 0xFF  # inside the state
    snapshot.write_bytes(bytes(damaged))
    assert not node._snapshot_sendable()
    wait_for(node._snapshot_sendable)  # rewritten from the state machine, then checked
    with open(snapshot, "rb") as f:
        last, prev, _, state_index = read_snapshot_meta(f)
        verified_snapshot_state(f)
    assert (last, prev) == read_snapshot_meta(io.BytesIO(good))[:2]  # the same place in the log
    assert state_index >= last[1]
    assert node.status().snapshots_written == written  # a rewrite is no log compaction


def test_a_slow_snapshot_write_does_not_hold_up_the_raft_thread(cluster: Callable[..., Cluster]) -> None:
    c = cluster(1, tuning=RaftTuning(propose_timeout=2.0, snapshot_min_entries=20), snapshots=True)
    address = c.addresses[0]
    node = c.start(address)
    c.machines[address].write_delay = 1.0  # writing the snapshot file takes a second
    c.leader()
    for i in range(25):
        node.propose(entry(b"%d" % i)).result(5)
    snapshot = c.root / address.replace(":", "_") / "raft" / "snapshot"
    wait_for(lambda: (snapshot.parent / "snapshot.writing").exists())
    latencies = []
    while not snapshot.exists():  # proposals commit at full speed meanwhile
        started = time.monotonic()
        node.propose(entry(b"meanwhile")).result(5)
        latencies.append(time.monotonic() - started)
    assert len(latencies) > 10 and max(latencies) < 0.2, latencies
    wait_for(lambda: node.status().snapshots_written >= 1  # and the log compacted up to it:
             and node.status().log_entries < 25 + len(latencies) - 15)


def test_a_restart_between_a_new_snapshot_and_the_compaction_keeps_the_log_after_it(
    cluster: Callable[..., Cluster],
) -> None:
    from mq9cluster.cluster.journal import create_journal
    from mq9cluster.cluster.raft import _snapshot_meta, write_snapshot_file

    c = cluster(1)
    address = c.addresses[0]
    node = c.start(address)
    c.leader()
    last = max(node.propose(entry(b"%d" % i)).result(5)[0] for i in range(30))
    machine = c.machines[address]
    c.stop(address)
    raft = c.root / address.replace(":", "_") / "raft"
    journal = create_journal(str(raft / "journal"))
    log = [journal[i] for i in range(len(journal))]
    journal._destroy()
    prev, covered = log[10], log[11]  # a snapshot at index 12, put in place; the log not compacted
    state = machine.write_snapshot()
    state.data = json.dumps({"last_applied": covered[1], "applied": []}).encode()
    write_snapshot_file(str(raft / "snapshot"), _snapshot_meta(covered, prev, [address], covered[1]),
                        state.write_to)

    c.snapshots = True
    node = c.start(address)
    c.leader()
    assert node.status().commit_index >= last  # pysyncobj alone would have cleared the log
    assert node.status().log_entries >= len(log) - 10
    assert c.machines[address].installs == 0  # the state machine was already past the snapshot
    index, _ = node.propose(entry(b"after")).result(5)
    assert index > last and c.machines[address].applied == [(index, entry(b"after"))]


# -- three nodes ------------------------------------------------------------------------------------


def test_three_nodes_replicate_and_followers_forward_proposals(cluster: Callable[..., Cluster]) -> None:
    c = cluster(3).start_all()
    leader = c.leader()
    follower = next(n for n in c.nodes.values() if n is not leader)
    index, _ = follower.propose(entry(b"from follower")).result(5)
    assert c.machines[follower.address].applied[-1] == (index, entry(b"from follower"))

    written, _ = leader.propose(entry(b"from leader")).result(5)
    for node in c.nodes.values():
        asyncio.run(node.read_barrier())
        assert c.machines[node.address].applied[-1] == (written, entry(b"from leader"))
    assert len({tuple(m.applied) for m in c.machines.values()}) == 1


def test_pipelined_appends_never_truncate_a_followers_log(
    cluster: Callable[..., Cluster], caplog: pytest.LogCaptureFixture,
) -> None:
    c = cluster(3).start_all()
    leader = c.leader()
    lagging = next(a for a in c.addresses if a != leader.address)
    c.stop(lagging)

    async def write(count: int) -> list[Any]:
        return await asyncio.gather(*(leader.propose_async(entry(b"w" * 200)) for _ in range(count)))

    async def write_while_restarting() -> list[Any]:
        writing = asyncio.ensure_future(write(1000))
        await asyncio.sleep(0.05)
        c.start(lagging)  # catches up through resets while entries keep streaming
        return await writing

    with caplog.at_level("CRITICAL", logger="pysyncobj"):
        asyncio.run(write(1000))
        last = max(index for index, _ in asyncio.run(write_while_restarting()))
        wait_for(lambda: c.machines[lagging].last >= last)
    assert not [r for r in caplog.records if "truncating" in r.getMessage()]
    assert len({tuple(m.applied) for m in c.machines.values()}) == 1


def test_leader_loss_fails_or_completes_proposals_and_a_new_leader_takes_over(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster(3).start_all()
    old = c.leader()
    follower = next(n for n in c.nodes.values() if n is not old)
    in_flight = [follower.propose(entry(b"in flight %d" % i)) for i in range(20)]
    c.stop(old.address)
    for future in in_flight:  # each settles within the propose timeout, one way or the other
        try:
            future.result(FAST.propose_timeout + 1)
        except ProposalFailed:
            pass

    deadline = time.monotonic() + 5
    while True:  # what a client does: retry the retryable error
        try:
            index, _ = follower.propose(entry(b"after failover")).result(FAST.propose_timeout + 1)
            break
        except ProposalFailed:
            assert time.monotonic() < deadline, "no write succeeded within 5 s of the leader loss"
    new = c.leader()
    assert new is not old

    c.start(old.address)  # rejoins with its journal and catches up
    wait_for(lambda: c.machines[old.address].last >= index)
    survivors = [c.machines[a].applied for a in c.addresses]
    assert all(s[: len(survivors[0])] == survivors[0][: len(s)] for s in survivors)


def test_an_isolated_leader_cannot_pass_a_read_barrier(cluster: Callable[..., Cluster]) -> None:
    c = cluster(3, tuning=RaftTuning(propose_timeout=1.5)).start_all()
    leader = c.leader()
    for address in c.addresses:
        if address != leader.address:
            c.stop(address)
    with pytest.raises(ProposalFailed) as failed:
        asyncio.run(leader.read_barrier())
    assert failed.value.maybe_applied or isinstance(failed.value, NotLeader)
    wait_for(lambda: leader.status().role != "leader", timeout=3)  # leader_fallback steps it down


def test_a_leader_cut_off_from_its_quorum_refuses_within_about_a_second(cluster: Callable[..., Cluster]) -> None:
    tuning = RaftTuning()  # the production timings: propose_timeout (5 s) is not what ends the wait
    c = cluster(3, tuning=tuning).start_all()
    leader = c.leader()
    for address in c.addresses:
        if address != leader.address:
            c.stop(address)
    cut = time.monotonic()
    appended = leader.propose(entry(b"appended, never committed"))
    with pytest.raises(NoQuorum) as failed:
        appended.result(tuning.propose_timeout + 1)
    assert failed.value.maybe_applied  # it is in this node's log: a later leader may commit it
    with pytest.raises(NoQuorum):
        asyncio.run(leader.read_barrier())
    with pytest.raises(NoQuorum) as refused:
        leader.propose(entry(b"refused")).result(1)
    assert not refused.value.maybe_applied
    assert time.monotonic() - cut < tuning.leader_fallback + 1.5


def test_a_proposal_refused_for_want_of_a_leader_is_never_applied_later(cluster: Callable[..., Cluster]) -> None:
    c = cluster(3)
    alone = c.start(c.addresses[0])  # no peer to elect a leader with
    started = time.monotonic()
    with pytest.raises(NoQuorum) as refused:
        alone.propose(entry(b"refused")).result(FAST.propose_timeout + 1)
    assert not refused.value.maybe_applied  # never appended anywhere
    assert time.monotonic() - started < FAST.leader_wait + 1

    for address in c.addresses[1:]:
        c.start(address)
    c.leader()
    alone.propose(entry(b"after the election")).result(5)  # queued after the refused one, were it kept
    assert entry(b"refused") not in [data for _, data in c.machines[alone.address].applied]


def test_a_follower_whose_peers_died_refuses_within_about_a_second(cluster: Callable[..., Cluster]) -> None:
    c = cluster(3).start_all()
    leader = c.leader()
    lonely = next(n for n in c.nodes.values() if n is not leader)
    for address in c.addresses:
        if address != lonely.address:
            c.stop(address)
    # Connected to no peer, pysyncobj holds no election and keeps the dead leader as its leader.
    started = time.monotonic()
    with pytest.raises(NoQuorum):
        lonely.propose(entry(b"refused")).result(FAST.propose_timeout + 1)
    with pytest.raises(NoQuorum):
        asyncio.run(lonely.read_barrier())
    assert time.monotonic() - started < FAST.leader_wait + 1


def test_a_follower_behind_the_compacted_log_installs_the_leaders_snapshot(
    cluster: Callable[..., Cluster],
) -> None:
    c = cluster(3, tuning=RaftTuning(propose_timeout=2.0, snapshot_min_entries=20), snapshots=True)
    c.start_all()
    leader = c.leader()
    behind = next(a for a in c.addresses if a != leader.address)
    c.stop(behind)
    for i in range(100):
        leader.propose(entry(b"while away %d" % i)).result(5)
    wait_for(lambda: leader.status().snapshots_written >= 2)
    node = c.start(behind)
    last, _ = leader.propose(entry(b"back")).result(5)
    wait_for(lambda: c.machines[behind].last >= last)
    assert node.status().snapshots_installed == 1 and c.machines[behind].installs == 1
    assert c.machines[behind].applied == c.machines[leader.address].applied
