"""Dialect 3 requests on one node: SEND, FETCH (stateless or by group, with long poll), ACK,
QUERY and DELETE, replying ``{"error": "", ...}`` on success.

Writes and group fetches go through the log (group commit); stateless fetches and queries are
reads after a read barrier. A long-poll FETCH that finds nothing parks a future that delivery
resolves when a message for the mailbox is applied on this node (``Delivery.arrival``), and an
event-loop timer ends it at ``max_wait_ms``: no thread and no polling loop per waiting fetch.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import Any

from mq9cluster.mailbox import agents, ops
from mq9cluster.mailbox.clock import ClusterClock, Now
from mq9cluster.mailbox.delivery import Delivery
from mq9cluster.mailbox.dialect3 import (
    Fetch, ack_request, fetch_request, message_view, query_request, send_options,
)
from mq9cluster.mailbox.pull import placement
from mq9cluster.mailbox.subjects import AgentRequest, MsgRequest
from mq9cluster.store import Message
from mq9cluster.store.reads import StoreReads

Body = dict[str, Any]
TICK_LIMIT = 1000  # delayed releases and TTL removals per tick op
VECTORS_MAX = 100_000  # card vectors kept for semantic DISCOVER (cleared when over)


def now_ms() -> int:
    """The proposer's clock (unix ms): stamped into ops, never read at apply."""
    return int(time.time() * 1000)


def local_now(store: StoreReads) -> Now:
    """This node's clock as apply would take it now, bounded by the committed cluster clock."""
    return ClusterClock.from_record(store.get_clock()).at(now_ms())


class PullService:
    """Dialect 3 for one node; ``submit`` proposes an op and resolves to its result body."""

    def __init__(
        self,
        store: StoreReads,
        submit: Callable[[ops.Op], asyncio.Future],
        outcome: Callable[[asyncio.Future], Body],
        barrier: Callable[[], Awaitable[None]],
        delivery: Delivery,
        answer: Callable[[bytes | None, Body], None],
        spawn: Callable[[Awaitable[None]], None],
        max_mailbox_bytes: int = 0,
        max_total_bytes: int = 0,
    ) -> None:
        self.store = store
        self.max_mailbox_bytes = max_mailbox_bytes
        self.max_total_bytes = max_total_bytes
        self.submit = submit
        self.outcome = outcome
        self.barrier = barrier
        self.delivery = delivery
        self.answer = answer
        self.spawn = spawn
        self._embedder: asyncio.Future | None = None  # loads the model once, at the first semantic request
        self._vectors: dict[str, list[float]] = {}

    def handle(self, request: MsgRequest, reply: bytes | None, payload: bytes, headers: bytes | None) -> None:
        """One dialect-3 publish."""
        verb, address = request.verb, request.address
        if verb == "SEND":
            options = send_options(headers)
            if isinstance(options, str):
                return self.answer(reply, {"error": options})
            self._commit(reply, ops.SendOp(address, options.priority, now_ms(), payload, headers, options.key,
                                           list(options.tags), options.ttl_ms, options.delay_ms,
                                           self.max_mailbox_bytes, self.max_total_bytes))
        elif verb == "FETCH":
            fetch = fetch_request(payload)
            if isinstance(fetch, str):
                return self.answer(reply, {"error": fetch})
            self.spawn(self._fetch(address, fetch, reply))
        elif verb == "ACK":
            ack = ack_request(payload)
            if isinstance(ack, str):
                return self.answer(reply, {"error": ack})
            self._commit(reply, ops.AckOp(address, ack.group, ack.msg_ids))
        elif verb == "QUERY":
            self.spawn(self._query(address, payload, reply))
        else:
            self._commit(reply, ops.DeleteMessageOp(address, request.msg_id))
        return None

    def handle_agent(self, request: AgentRequest, reply: bytes | None, payload: bytes) -> None:
        """One agent-registry publish."""
        if request.verb == "DISCOVER":
            self.spawn(self._discover(payload, reply))
            return
        if request.verb == "REGISTER":
            op: ops.Op | str = agents.register_op(payload, now_ms())
        elif request.verb == "UNREGISTER":
            op = agents.unregister_op(payload)
        else:
            op = agents.report_op(payload, now_ms())
        if isinstance(op, str):
            self.answer(reply, {"error": op})
        else:
            self._commit(reply, op)

    async def _fresh(self, reply: bytes | None) -> bool:
        """Wait for the read barrier; on failure answer the retryable error and return False."""
        try:
            await self.barrier()
        except Exception as exc:
            self.answer(reply, {"error": f"read not possible now: {exc}; retry"})
            return False
        return True

    async def _discover(self, payload: bytes, reply: bytes | None) -> None:
        query = agents.discover_request(payload)
        if isinstance(query, str):
            return self.answer(reply, {"error": query})
        if not await self._fresh(reply):
            return None
        registered = self.store.agents()
        texts = [agents.card_text(json.loads(record[0])) for _, record in registered]
        body: Body = {"error": ""}
        ranked: list[tuple[int, float | None]]
        if query.semantic:
            if self._embedder is None:
                self._embedder = asyncio.ensure_future(asyncio.to_thread(agents.load_embedder))
            embedder = await asyncio.shield(self._embedder)
            if embedder is None:
                body["note"] = agents.SEMANTIC_MISSING
                ranked = list(agents.rank_by_text(query.semantic, texts))
            else:
                if len(self._vectors) > VECTORS_MAX:
                    self._vectors.clear()
                ranked = list(await asyncio.to_thread(agents.rank_by_meaning, embedder, query.semantic,
                                                      texts, self._vectors))
        elif query.text:
            ranked = list(agents.rank_by_text(query.text, texts))
        else:
            ranked = [(i, None) for i in range(len(registered))]
        first = (query.page - 1) * query.limit
        body["total"] = len(ranked)
        body["agents"] = [agents.card_view(*registered[i], score) for i, score in ranked[first:first + query.limit]]
        return self.answer(reply, body)

    def _commit(self, reply: bytes | None, op: ops.Op) -> None:
        self.submit(op).add_done_callback(lambda done: self.answer(reply, self._success(self.outcome(done))))

    @staticmethod
    def _success(body: Body) -> Body:
        return body if "error" in body else {"error": "", **body}

    # -- FETCH -------------------------------------------------------------------------------

    async def _fetch(self, address: str, fetch: Fetch, reply: bytes | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + fetch.max_wait_ms / 1000
        placed: tuple[dict[int, int], int] | None = None
        first = True
        while True:
            waiter = self.delivery.arrival(address)  # before reading: an arrival meanwhile wakes us
            try:
                if fetch.group:
                    body = await self._group_fetch(address, fetch, first)
                else:
                    if placed is None:
                        await self.barrier()
                        mailbox = self.store.get_mailbox(address)
                        if mailbox is None:
                            body = {"error": f"mailbox {address} does not exist"}
                            break
                        placed = placement(fetch.deliver, fetch.start, mailbox.next_msg_id)
                    else:
                        await self.barrier()
                    body = {"error": "", "messages": self._read(address, placed, fetch.num_msgs)}
                first = False
                remaining = deadline - loop.time()
                if body["error"] or body["messages"] or remaining <= 0:
                    break
                redelivery = self._next_redelivery(address, fetch.group)
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), min(remaining, redelivery))
                except TimeoutError:
                    if loop.time() >= deadline:
                        break  # nothing arrived: reply with the empty list
            except Exception as exc:  # no leader, commit failed: the client retries
                body = {"error": f"fetch not possible now: {exc}; retry"}
                break
            finally:
                self.delivery.forget_arrival(address, waiter)
        self.answer(reply, body)

    async def _group_fetch(self, address: str, fetch: Fetch, first: bool) -> Body:
        op = ops.FetchOp(address, fetch.group, now_ms(), fetch.num_msgs, fetch.deliver, fetch.start,
                         fetch.force and first, fetch.ack_wait_ms if first else 0)
        result = await self.submit(op)
        if "error" in result:
            return dict(result)
        handed = result["messages"]
        found = {m.msg_id: m for m in self.store.get_messages(address, [(p, i) for p, i, _ in handed])}
        meta = self.store.get_message_meta(address, sorted(found))
        return {"error": "", "messages": [message_view(found[i], meta.get(i), bool(again))
                                          for _, i, again in handed if i in found]}

    def _next_redelivery(self, address: str, group: str) -> float:
        """Seconds until the group's first in-flight message is due again (inf: none, or no group)."""
        if not group:
            return float("inf")
        deadlines = [deadline for _, _, deadline in self.store.inflight(address, group)]
        return max((min(deadlines) - local_now(self.store).stamp) / 1000, 0.001) if deadlines else float("inf")

    def _read(self, address: str, placed: tuple[dict[int, int], int], limit: int) -> list[Body]:
        cursor, from_ts = placed
        now = local_now(self.store).stamp
        views: list[Body] = []
        messages = iter(self.store.iter_messages(address, None, after=cursor))
        while len(views) < limit:  # chunks of what is still wanted: one multi-get of options per chunk
            chunk = list(islice(messages, limit - len(views)))
            if not chunk:
                break
            meta = self.store.get_message_meta(address, [m.msg_id for m in chunk])
            views += [message_view(m, meta.get(m.msg_id)) for m in chunk
                      if m.ts_ms >= from_ts and not 0 < meta.get(m.msg_id, ("", [], 0))[2] <= now]
        return views

    # -- QUERY -------------------------------------------------------------------------------

    async def _query(self, address: str, payload: bytes, reply: bytes | None) -> None:
        query = query_request(payload)
        if isinstance(query, str):
            return self.answer(reply, {"error": query})
        if not await self._fresh(reply):
            return None
        if self.store.get_mailbox(address) is None:
            return self.answer(reply, {"error": f"mailbox {address} does not exist"})
        candidates: list[Message] | Any
        if query.key:
            holder = self.store.key_holder(address, query.key)
            candidates = self.store.get_messages(address, [holder]) if holder else []
        else:
            candidates = self.store.iter_messages(address)
        now, views = local_now(self.store).stamp, []
        for message in candidates:
            if message.ts_ms < query.since:
                continue
            meta = self.store.get_message_meta(address, [message.msg_id]).get(message.msg_id)
            if meta is not None and 0 < meta[2] <= now:
                continue
            if query.tags and (meta is None or not query.tags <= set(meta[1])):
                continue
            views.append(message_view(message, meta))
            if len(views) >= query.limit:
                break
        return self.answer(reply, {"error": "", "messages": views})

    # -- delayed messages and message TTLs ----------------------------------------------------

    async def run_ticks(self, is_leader: Callable[[], bool], interval: float) -> None:
        """While this node leads, propose a tick whenever a delayed message is due or a message
        TTL has ended (one tick at a time).

        The timers change only when an entry is applied (or a snapshot installed, which moves
        the applied index too): the store is searched for the next one only after that, not on
        every round of an idle node.
        """
        searched_at, due = -1, None
        while True:
            await asyncio.sleep(interval)
            if not is_leader():
                continue
            applied = self.store.last_applied()  # read before the search: a later apply searches again
            if applied != searched_at:
                due, searched_at = self.store.next_message_timer(), applied
            if due is not None and due <= local_now(self.store).stamp:
                try:
                    await self.submit(ops.TickOp(now_ms(), TICK_LIMIT))
                except Exception:  # the next round tries again
                    await asyncio.sleep(interval)
