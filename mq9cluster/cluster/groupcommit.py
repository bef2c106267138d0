"""Group commit: many small operations ride in one Raft entry.

Owns the batch entry format (``Op.BATCH`` + msgpack list of opaque operations; encode and decode
sit here together) and the batching policy. Knows nothing of what an operation means: the state
machine decodes a batch with ``decode_batch`` and returns one result per operation, in order.
Runs on one asyncio event loop.

Policy: an operation waits at most ``max_wait`` for others to join it; a batch leaves at once when
it reaches ``max_ops`` or ``max_bytes``. While ``max_in_flight`` batches are in flight nothing
leaves: operations keep collecting and go out together as soon as one lands (natural batching:
the slower Raft is, the larger the entries).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import msgpack

from mq9cluster.cluster.raft import Op, ProposalFailed


class Proposer(Protocol):
    """What group commit needs from Raft (RaftNode fits)."""

    async def propose_async(self, entry: bytes) -> Any: ...


def encode_batch(ops: list[bytes]) -> bytes:
    """One batch entry: the opcode byte, then a msgpack array of the operations."""
    return bytes([Op.BATCH]) + msgpack.packb(ops, use_bin_type=True)


def decode_batch(entry: bytes | memoryview) -> list[bytes]:
    """The operations of a batch entry, in order; ValueError if ``entry`` is not one."""
    if entry[:1] != bytes([Op.BATCH]):
        raise ValueError(f"not a batch entry (opcode {bytes(entry[:1])!r})")
    ops = msgpack.unpackb(entry[1:], raw=False)
    if not isinstance(ops, list) or not all(isinstance(op, bytes) for op in ops):
        raise ValueError("batch entry does not hold a list of byte strings")
    return ops


class GroupCommitter:
    """Collects operations into batch entries and hands each operation its own result."""

    def __init__(
        self,
        raft: Proposer,
        *,
        max_ops: int = 1000,
        max_bytes: int = 256 * 1024,
        max_wait: float = 0.001,
        max_in_flight: int = 2,
    ) -> None:
        self._raft = raft
        self._max_ops = max_ops
        self._max_bytes = max_bytes
        self._max_wait = max_wait
        self._max_in_flight = max_in_flight
        self._ops: list[bytes] = []
        self._futures: list[asyncio.Future[Any]] = []
        self._bytes = 0
        self._timer: asyncio.Handle | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closed = False
        self.entries_proposed = 0

    def submit(self, op: bytes) -> asyncio.Future[Any]:
        """Queue ``op``; the future gets the state machine's result for it, or the batch's error."""
        if self._closed:
            raise RuntimeError("group committer is closed")
        future = asyncio.get_running_loop().create_future()
        self._ops.append(op)
        self._futures.append(future)
        self._bytes += len(op)
        if len(self._ops) >= self._max_ops or self._bytes >= self._max_bytes:
            self._flush()
        elif self._timer is None and len(self._in_flight) < self._max_in_flight:
            # Nothing in flight: go at the end of this loop iteration (every op parsed from the
            # same reads rides along). Otherwise wait up to max_wait for more to gather.
            loop = asyncio.get_running_loop()
            self._timer = (loop.call_later(self._max_wait, self._flush) if self._in_flight
                           else loop.call_soon(self._flush))
        return future

    def _flush(self) -> None:
        """Send as many batches as the in-flight bound allows; the rest waits for a landing."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._ops and len(self._in_flight) < self._max_in_flight:
            ops, futures = self._take()
            task = asyncio.get_running_loop().create_task(self._commit(ops, futures))
            self._in_flight.add(task)
            task.add_done_callback(self._landed)

    def _take(self) -> tuple[list[bytes], list[asyncio.Future[Any]]]:
        """The oldest operations up to max_ops and max_bytes (at least one)."""
        count, size = 0, 0
        while count < len(self._ops) and count < self._max_ops:
            if count and size + len(self._ops[count]) > self._max_bytes:
                break
            size += len(self._ops[count])
            count += 1
        ops, self._ops = self._ops[:count], self._ops[count:]
        futures, self._futures = self._futures[:count], self._futures[count:]
        self._bytes -= size
        return ops, futures

    async def _commit(self, ops: list[bytes], futures: list[asyncio.Future[Any]]) -> None:
        self.entries_proposed += 1
        try:
            results = await self._raft.propose_async(encode_batch(ops))
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:  # ProposalFailed (retryable) or a bad entry: every op gets it
            _fail(futures, exc)
            return
        if not isinstance(results, list) or len(results) != len(futures):
            _fail(futures, RuntimeError(f"state machine returned {results!r} for {len(ops)} ops"))
            return
        for future, result in zip(futures, results):
            if not future.done():
                future.set_result(result)

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._ops and not self._closed:
            self._flush()

    def close(self) -> None:
        """Refuse new operations and fail the ones not yet proposed; batches in flight complete."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        _fail(self._futures, ProposalFailed("group committer closed", maybe_applied=False))
        self._ops, self._futures, self._bytes = [], [], 0


def _fail(futures: list[asyncio.Future[Any]], error: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error)
