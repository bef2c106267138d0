"""GroupCommitter: batching through a real one-node RaftNode; error paths through a fake proposer."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mq9cluster.cluster.groupcommit import GroupCommitter, ProposalIds, decode_batch, encode_batch
from mq9cluster.cluster.raft import NOOP_ENTRY, NotLeader, ProposalFailed, RaftNode, RaftTuning
from mq9cluster.errors import NodeStopped, NoQuorum


class EchoMachine:
    """Applies batch entries: each op's result is (index, position in entry, op)."""

    def __init__(self) -> None:
        self.last = 0
        self.entries: list[list[bytes]] = []

    def apply(self, index: int, entry: bytes) -> list[tuple[int, int, bytes]]:
        _, ops = decode_batch(entry)
        self.entries.append(ops)
        self.last = index
        return [(index, position, op) for position, op in enumerate(ops)]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[RaftNode, EchoMachine]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    machine = EchoMachine()
    raft = RaftNode(address, [], str(tmp_path), machine.apply, lambda: machine.last,
                    tuning=RaftTuning(propose_timeout=5.0))
    deadline = time.monotonic() + 5
    while raft.status().role != "leader":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield raft, machine
    raft.stop()


def ops_of(entry: bytes) -> list[bytes]:
    return decode_batch(entry)[1]


def test_batch_entry_round_trip() -> None:
    ops = [b"", b"a", bytes(range(256)) * 3]
    ids = ProposalIds()
    first, second = ids.next(), ids.next()
    assert first != second and len(first) == len(second) == 16
    assert decode_batch(encode_batch(ops, first)) == (first, ops)
    assert decode_batch(b"\x01\x92\xc4\x01a\xc4\x00") == (None, [b"a", b""])  # the id-less form
    with pytest.raises(ValueError):
        decode_batch(NOOP_ENTRY)
    with pytest.raises(ValueError):
        decode_batch(b"\x01\x92\x01\x02")  # a batch opcode and a list, but not of bytes
    with pytest.raises(ValueError):
        encode_batch(ops, b"short")


def test_concurrent_ops_share_few_entries_and_each_gets_its_own_result(
    node: tuple[RaftNode, EchoMachine],
) -> None:
    raft, machine = node
    ops = [b"op-%05d" % i + b"x" * 190 for i in range(5000)]

    async def run() -> tuple[list[Any], int]:
        committer = GroupCommitter(raft, max_ops=1000)
        results = await asyncio.gather(*(committer.submit(op) for op in ops))
        return results, committer.entries_proposed

    results, entries = asyncio.run(run())
    assert [op for _, _, op in results] == ops  # every op got its own result
    assert entries == len(machine.entries) <= 10
    assert [op for entry in machine.entries for op in entry] == ops  # applied in submission order
    indexes = [index for index, _, _ in results]
    assert indexes == sorted(indexes)


def test_batches_respect_max_ops_and_max_bytes(node: tuple[RaftNode, EchoMachine]) -> None:
    raft, machine = node

    async def run() -> None:
        by_count = GroupCommitter(raft, max_ops=7)
        await asyncio.gather(*(by_count.submit(b"c") for _ in range(50)))
        by_size = GroupCommitter(raft, max_bytes=1000)
        await asyncio.gather(*(by_size.submit(b"s" * 300) for _ in range(20)))
        await by_size.submit(b"big" * 1000)  # larger than max_bytes: an entry of its own

    asyncio.run(run())
    counted = [e for e in machine.entries if e[0] == b"c"]
    sized = [e for e in machine.entries if e[0].startswith(b"s")]
    assert sum(map(len, counted)) == 50 and max(map(len, counted)) <= 7
    assert sum(map(len, sized)) == 20 and max(sum(map(len, e)) for e in sized) <= 1000
    assert machine.entries[-1] == [b"big" * 1000]


class FakeProposer:
    """Answers proposals when told to; records what it was given."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.pending: list[asyncio.Future[Any]] = []

    def propose_soon(self, entry: bytes) -> asyncio.Future[Any]:
        self.entries.append(entry)
        future = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_failed_proposal_is_proposed_again_with_the_same_id_and_bytes() -> None:
    async def run() -> None:
        fake = FakeProposer()
        committer = GroupCommitter(fake, max_wait=0, retry_interval=0.001)
        futures = [committer.submit(b"a"), committer.submit(b"b")]
        await asyncio.sleep(0.01)
        fake.pending[0].set_exception(NotLeader("leader changed", "x", maybe_applied=True))
        await asyncio.sleep(0.01)
        fake.pending[1].set_exception(ProposalFailed("proposal timed out", maybe_applied=True))
        await asyncio.sleep(0.01)
        fake.pending[2].set_result(["A", "B"])
        assert [await f for f in futures] == ["A", "B"]
        assert fake.entries[0] == fake.entries[1] == fake.entries[2]  # one proposal id throughout
        assert committer.retries == 2 and committer.entries_proposed == 1
        later = committer.submit(b"c")
        await asyncio.sleep(0.01)
        assert decode_batch(fake.entries[3])[0] != decode_batch(fake.entries[0])[0]  # a new batch, a new id
        fake.pending[3].set_result(["C"])
        assert await later == "C"

    asyncio.run(run())


@pytest.mark.parametrize("error", [NodeStopped(maybe_applied=True), NoQuorum("cut off", maybe_applied=True)])
def test_a_node_that_stopped_or_lost_its_quorum_fails_its_ops_at_once(error: ProposalFailed) -> None:
    async def run() -> None:
        fake = FakeProposer()
        committer = GroupCommitter(fake, max_wait=0, retry_for=60)
        future = committer.submit(b"a")
        await asyncio.sleep(0.01)
        fake.pending[0].set_exception(error)
        with pytest.raises(type(error)):
            await future
        assert len(fake.entries) == 1

    asyncio.run(run())


def test_when_the_retry_budget_is_spent_every_op_gets_the_retryable_error() -> None:
    async def run() -> None:
        fake = FakeProposer()
        committer = GroupCommitter(fake, max_wait=0, retry_for=0)
        futures = [committer.submit(b"%d" % i) for i in range(5)]
        await asyncio.sleep(0.01)
        error = NotLeader("no leader", None, maybe_applied=False)
        fake.pending[0].set_exception(error)
        for future in futures:
            with pytest.raises(NotLeader):
                await future

        wrong = committer.submit(b"x")
        await asyncio.sleep(0.01)
        fake.pending[1].set_result(["one", "too many"])
        with pytest.raises(RuntimeError, match="returned"):
            await wrong

    asyncio.run(run())


def test_ops_collect_while_batches_are_in_flight() -> None:
    async def run() -> None:
        fake = FakeProposer()
        committer = GroupCommitter(fake, max_wait=0, max_in_flight=2)
        first = [committer.submit(b"a"), committer.submit(b"b")]
        await asyncio.sleep(0.01)
        second = [committer.submit(b"c")]
        await asyncio.sleep(0.01)
        waiting = [committer.submit(b"%d" % i) for i in range(10)]
        await asyncio.sleep(0.01)
        assert [ops_of(e) for e in fake.entries] == [[b"a", b"b"], [b"c"]]  # bound reached
        fake.pending[0].set_result(["A", "B"])
        await settle()
        assert [await f for f in first] == ["A", "B"]
        assert ops_of(fake.entries[2]) == [b"%d" % i for i in range(10)]  # one entry on landing
        fake.pending[1].set_result(["C"])
        fake.pending[2].set_result(list(range(10)))
        assert [await f for f in second + waiting] == ["C", *range(10)]

    asyncio.run(run())


def test_close_fails_ops_not_yet_proposed() -> None:
    async def run() -> None:
        committer = GroupCommitter(FakeProposer(), max_wait=10)
        future = committer.submit(b"never sent")
        committer.close()
        with pytest.raises(ProposalFailed):
            await future
        with pytest.raises(RuntimeError):
            committer.submit(b"too late")

    asyncio.run(run())


@pytest.mark.parametrize("last", [NoQuorum("cut off", maybe_applied=False), NodeStopped(maybe_applied=False),
                                  NotLeader("no leader", None, maybe_applied=False)])
def test_a_batch_whose_earlier_attempt_may_have_committed_never_fails_as_not_committed(last) -> None:
    """Found by the chaos suite (partition-halves, seed 1): a send forwarded to the leader just
    before its node was cut off committed, while the node's retry, parked without a leader,
    failed as not applied; the client was told "not committed" for a stored message."""

    async def run() -> None:
        fake = FakeProposer()
        committer = GroupCommitter(fake, max_wait=0, retry_interval=0.001, retry_for=0.05)
        future = committer.submit(b"a")
        await asyncio.sleep(0.01)
        fake.pending[0].set_exception(NotLeader("leader changed", "x", maybe_applied=True))
        await asyncio.sleep(0.06)  # the retry budget is spent: the second failure is the last
        fake.pending[1].set_exception(last)
        with pytest.raises(type(last)) as failed:
            await future
        assert failed.value.maybe_applied

    asyncio.run(run())


def test_a_full_batch_is_handed_to_raft_before_submit_returns() -> None:
    """A batch cut by max_ops is proposed at once, not in a later loop iteration: its fsync runs
    while the rest of a large read is still being parsed."""

    async def run() -> None:
        fake = FakeProposer()
        committer = GroupCommitter(fake, max_ops=3, max_wait=10, max_in_flight=4)
        futures = [committer.submit(b"%d" % i) for i in range(7)]
        assert [ops_of(e) for e in fake.entries] == [[b"0", b"1", b"2"], [b"3", b"4", b"5"]]
        await settle()
        fake.pending[1].set_result(["D", "E", "F"])  # the later batch lands first
        await settle()
        assert [f.done() for f in futures[:6]] == [False] * 3 + [True] * 3
        fake.pending[0].set_result(["A", "B", "C"])
        assert [await f for f in futures[:6]] == ["A", "B", "C", "D", "E", "F"]
        committer.close()

    asyncio.run(run())


def test_submit_then_calls_back_each_op_and_one_failing_callback_spares_the_others() -> None:
    async def run() -> None:
        fake = FakeProposer()
        committer = GroupCommitter(fake, max_wait=0)
        outcomes: list[tuple[Any, BaseException | None]] = []

        def broken(result: Any, error: BaseException | None) -> None:
            raise RuntimeError("handler bug")

        committer.submit_then(b"a", lambda result, error: outcomes.append((result, error)))
        committer.submit_then(b"b", broken)
        committer.submit_then(b"c", lambda result, error: outcomes.append((result, error)))
        await settle()
        fake.pending[0].set_result(["A", "B", "C"])
        await settle()
        assert outcomes == [("A", None), ("C", None)]

        failed: list[BaseException | None] = []
        committer.submit_then(b"d", lambda result, error: failed.append(error))
        await settle()
        fake.pending[1].set_exception(NodeStopped(maybe_applied=True))
        await settle()
        assert len(failed) == 1 and isinstance(failed[0], NodeStopped)

    asyncio.run(run())
