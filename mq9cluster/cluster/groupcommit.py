"""Group commit: many small operations ride in one Raft entry, proposed until it is known applied.

Owns the batch entry format (``Op.BATCH_ID``, a 16-byte proposal id, then a msgpack list of opaque
operations; encode and decode sit here together) and the batching and retry policy. Knows nothing
of what an operation means: the state machine decodes a batch with ``decode_batch`` and returns one
result per operation, in order, and returns the stored results of an id it already applied.
Runs on one asyncio event loop.

Policy: an operation waits at most ``max_wait`` for others to join it; a batch leaves at once when
it reaches ``max_ops`` or ``max_bytes``. While ``max_in_flight`` batches are in flight nothing
leaves: operations keep collecting and go out together as soon as one lands (natural batching:
the slower Raft is, the larger the entries).

Retry: a batch whose proposal failed at the Raft level (leader changed, timeout, discarded) is
proposed again, the same bytes under the same proposal id, every ``retry_interval`` until
``retry_for`` seconds passed. The id makes the retry safe when the first attempt did commit after
all: the state machine applies an id once (see the store's dedup window), so a client request is
never appended twice. Only when the budget runs out, this node stops or it has no quorum
(``NoQuorum``: refusing at once is the point) do the operations fail.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgpack

from mq9cluster.cluster.raft import Op
from mq9cluster.errors import NodeStopped, NoQuorum, ProposalFailed
from mq9cluster.metrics import BATCH_OPS

log = logging.getLogger(__name__)

PROPOSAL_ID_BYTES = 16
_COUNTER = struct.Struct(">Q")

# An operation's outcome: called once on the loop with (result, None) or (None, error); the
# error is asyncio.CancelledError when its batch was cancelled. Must not raise.
Done = Callable[[Any, "BaseException | None"], None]


class Proposer(Protocol):
    """What group commit needs from Raft (RaftNode fits)."""

    def propose_soon(self, entry: bytes) -> Awaitable[Any]:
        """Hand ``entry`` to Raft now; the awaitable gives its result once applied here."""


class ProposalIds:
    """Proposal ids unique across nodes and restarts: 8 random bytes per process, then a counter."""

    def __init__(self) -> None:
        self._prefix = secrets.token_bytes(PROPOSAL_ID_BYTES - _COUNTER.size)
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        return self._prefix + _COUNTER.pack(next(self._counter))


def encode_batch(ops: list[bytes], proposal_id: bytes) -> bytes:
    """One batch entry: the opcode byte, the proposal id, then a msgpack array of the operations."""
    if len(proposal_id) != PROPOSAL_ID_BYTES:
        raise ValueError(f"a proposal id is {PROPOSAL_ID_BYTES} bytes")
    return bytes([Op.BATCH_ID]) + proposal_id + msgpack.packb(ops, use_bin_type=True)


def decode_batch(entry: bytes | memoryview) -> tuple[bytes | None, list[bytes]]:
    """(proposal id, operations in order) of a batch entry; ValueError if ``entry`` is not one.

    Entries of the older ``Op.BATCH`` form carry no id: None.
    """
    opcode = entry[:1]
    if opcode == bytes([Op.BATCH_ID]):
        proposal_id: bytes | None = bytes(entry[1:1 + PROPOSAL_ID_BYTES])
        body = entry[1 + PROPOSAL_ID_BYTES:]
    elif opcode == bytes([Op.BATCH]):
        proposal_id, body = None, entry[1:]
    else:
        raise ValueError(f"not a batch entry (opcode {bytes(opcode)!r})")
    ops = msgpack.unpackb(body, raw=False)
    if not isinstance(ops, list) or not all(isinstance(op, bytes) for op in ops):
        raise ValueError("batch entry does not hold a list of byte strings")
    return proposal_id, ops


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
        retry_for: float = 10.0,
        retry_interval: float = 0.05,
    ) -> None:
        self._raft = raft
        self._retry_for = retry_for
        self._retry_interval = retry_interval
        self._ids = ProposalIds()
        self._max_ops = max_ops
        self._max_bytes = max_bytes
        self._max_wait = max_wait
        self._max_in_flight = max_in_flight
        self._ops: list[bytes] = []
        self._waiters: list[Done] = []
        self._bytes = 0
        self._timer: asyncio.Handle | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closed = False
        self.entries_proposed = 0
        self.retries = 0

    def submit(self, op: bytes) -> asyncio.Future[Any]:
        """Queue ``op``; the future gets the state machine's result for it, or the batch's error."""
        future = asyncio.get_running_loop().create_future()
        self.submit_then(op, functools.partial(_settle, future))
        return future

    def submit_then(self, op: bytes, done: Done) -> None:
        """Queue ``op``; ``done`` gets its result or the batch's error (see ``Done``).

        The hot path for requests answered from a callback: no future and no extra loop
        iteration per operation, just one call per operation when its batch lands.
        """
        if self._closed:
            raise RuntimeError("group committer is closed")
        self._ops.append(op)
        self._waiters.append(done)
        self._bytes += len(op)
        if len(self._ops) >= self._max_ops or self._bytes >= self._max_bytes:
            self._flush()
        elif self._timer is None and len(self._in_flight) < self._max_in_flight:
            # Nothing in flight: go at the end of this loop iteration (every op parsed from the
            # same reads rides along). Otherwise wait up to max_wait for more to gather.
            loop = asyncio.get_running_loop()
            self._timer = (loop.call_later(self._max_wait, self._flush) if self._in_flight
                           else loop.call_soon(self._flush))

    def _flush(self) -> None:
        """Send as many batches as the in-flight bound allows; the rest waits for a landing.

        Each batch is handed to Raft here, not in its task's first step: a batch cut by
        ``max_ops`` while a large read is still being parsed is on its way (its fsync running)
        before the rest of the read is parsed, and lands before the batches cut after it.
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._ops and len(self._in_flight) < self._max_in_flight:
            ops, waiters = self._take()
            self.entries_proposed += 1
            BATCH_OPS.observe(len(ops))
            entry = encode_batch(ops, self._ids.next())
            task = asyncio.get_running_loop().create_task(self._commit(entry, waiters, self._attempt(entry)))
            self._in_flight.add(task)
            task.add_done_callback(self._landed)

    def _attempt(self, entry: bytes) -> Awaitable[Any]:
        """One proposal of ``entry``, already handed to Raft; a refusal comes out of the awaitable."""
        try:
            return self._raft.propose_soon(entry)
        except Exception as exc:  # a bad entry (ValueError): its ops get the error
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed

    def _take(self) -> tuple[list[bytes], list[Done]]:
        """The oldest operations up to max_ops and max_bytes (at least one)."""
        count, size = 0, 0
        while count < len(self._ops) and count < self._max_ops:
            if count and size + len(self._ops[count]) > self._max_bytes:
                break
            size += len(self._ops[count])
            count += 1
        ops, self._ops = self._ops[:count], self._ops[count:]
        waiters, self._waiters = self._waiters[:count], self._waiters[count:]
        self._bytes -= size
        return ops, waiters

    async def _commit(self, entry: bytes, waiters: list[Done], attempt: Awaitable[Any]) -> None:
        try:
            results = await self._propose(entry, attempt)
        except asyncio.CancelledError as exc:
            _fail(waiters, exc)
            raise
        except Exception as exc:  # ProposalFailed (retryable) or a bad entry: every op gets it
            _fail(waiters, exc)
            return
        if not isinstance(results, list) or len(results) != len(waiters):
            _fail(waiters, RuntimeError(f"state machine returned {results!r} for {len(waiters)} ops"))
            return
        for done, result in zip(waiters, results):
            _call(done, result, None)

    async def _propose(self, entry: bytes, attempt: Awaitable[Any]) -> Any:
        """Await ``attempt``, proposing ``entry`` again until it is applied, within the retry
        budget (see the module doc)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._retry_for
        uncertain = False  # an earlier attempt of these same bytes may still commit
        while True:
            try:
                return await attempt
            except ProposalFailed as exc:
                uncertain = uncertain or exc.maybe_applied
                last = (isinstance(exc, (NodeStopped, NoQuorum))  # nothing to wait for on this node
                        or self._closed or loop.time() + self._retry_interval >= give_up)
                if last:
                    # the last attempt's "not applied" does not cover an earlier attempt that
                    # was forwarded before the leader was lost: the client must hear "unknown"
                    exc.maybe_applied = uncertain
                    raise
                self.retries += 1
                log.debug("raft proposal failed (%s); retrying under the same proposal id", exc)
                await asyncio.sleep(self._retry_interval)
                attempt = self._attempt(entry)

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
        _fail(self._waiters, ProposalFailed("group committer closed", maybe_applied=False))
        self._ops, self._waiters, self._bytes = [], [], 0


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """``Done`` for ``submit``: the outcome into its future (a cancelled batch cancels it)."""
    if future.done():
        return
    if isinstance(error, asyncio.CancelledError):
        future.cancel()
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _call(done: Done, result: Any, error: BaseException | None) -> None:
    try:
        done(result, error)
    except Exception:  # one operation's outcome handler must not cost the others theirs
        log.exception("group commit: an outcome handler failed")


def _fail(waiters: list[Done], error: BaseException) -> None:
    for done in waiters:
        _call(done, None, error)
