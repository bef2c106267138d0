"""The mailbox service: turns ``$mq9.AI.`` publishes and subscriptions into mq9 behaviour.

It validates requests, stamps them (time, private ids), submits ops to group commit, replies
once the op is committed and applied, serves reads after a read barrier, reports this node's
clock to the cluster clock, and drives TTL expiry while this node leads. It reaches Raft only through the small interfaces below and the server
only through ``reply`` and the ``Subscriber`` objects it is handed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from mq9cluster.errors import PermissionDenied
from mq9cluster.mailbox import ops
from mq9cluster.mailbox.clock import REPORT_INTERVAL, ClusterClock
from mq9cluster.mailbox.delivery import Delivery, Subscriber
from mq9cluster.mailbox.names import PRIORITY_NAMES, SDK_PRIORITY_NAMES, address_problem, new_private_address
from mq9cluster.mailbox.pull_service import PullService, now_ms
from mq9cluster.metrics import SEND_ACK_SECONDS
from mq9cluster.mailbox.subjects import (
    AgentRequest, Create, DeleteMessage, Forbidden, Invalid, ListMessages, MsgRequest, PublicList, Receive, Send,
    parse_request, parse_subscription,
)
from mq9cluster.store import Message
from mq9cluster.store.reads import StoreReads

log = logging.getLogger("mq9cluster.mailbox")

MAX_DESC = 1024
PARSED_SUBJECTS_MAX = 4096  # parsed publish subjects kept (senders reuse theirs)


class Committer(Protocol):
    """Group commit: one op in, its apply result out (a dict), after commit."""

    def submit(self, op: bytes) -> asyncio.Future: ...

    def submit_then(self, op: bytes, done: Callable[[Any, BaseException | None], None]) -> None: ...


class MailboxService:
    """mq9 semantics for one node."""

    def __init__(
        self,
        store: StoreReads,
        committer: Committer,
        barrier: Callable[[], Awaitable[None]],
        is_leader: Callable[[], bool],
        max_ttl: int,
        replay_window: int,
        max_mailbox_bytes: int = 0,
        max_mailboxes: int = 0,
        max_total_bytes: int = 0,
    ) -> None:
        self.store = store
        self.committer = committer
        self.barrier = barrier
        self.is_leader = is_leader
        self.max_ttl = max_ttl
        self.max_mailbox_bytes = max_mailbox_bytes
        self.max_mailboxes = max_mailboxes
        self.max_total_bytes = max_total_bytes
        self.reply: Callable[[bytes, bytes], None] = lambda subject, payload: None
        self.delivery = Delivery(store, barrier, self._claim, replay_window)
        self._parsed: dict[bytes, object] = {}
        self._tasks: set[asyncio.Task] = set()
        self.pull = PullService(store, lambda op: committer.submit(ops.encode(op)), self._result, barrier,
                                self.delivery, self._answer, self._spawn, max_mailbox_bytes, max_total_bytes)

    # -- publishes ---------------------------------------------------------------------------

    def publish(self, subject: bytes, reply: bytes | None, payload: bytes, headers: bytes | None) -> None:
        """Handle a publish on a ``$mq9.AI.`` subject; answer on ``reply`` when there is one."""
        request = self._parsed.get(subject)
        if request is None:
            request = parse_request(subject.decode("utf-8", "replace"))
            if len(self._parsed) >= PARSED_SUBJECTS_MAX:
                self._parsed.clear()
            self._parsed[subject] = request
        kind = type(request)
        if kind is Send:
            op = ops.AppendOp(request.address, request.priority, now_ms(), payload, headers,
                              self.max_mailbox_bytes, self.max_total_bytes)
            self._submit(op, reply)
        elif kind is Create:
            self._create(payload, reply)
        elif kind is DeleteMessage:
            self._submit(ops.DeleteMessageOp(request.address, request.msg_id), reply)
        elif kind is ListMessages:
            self._read(reply, self._list_messages, request.address)
        elif kind is PublicList:
            self._read(reply, self._public_list)
        elif kind is MsgRequest:
            self.pull.handle(request, reply, payload, headers)
        elif kind is AgentRequest:
            self.pull.handle_agent(request, reply, payload)
        else:
            assert isinstance(request, Invalid)
            self._answer(reply, {"error": request.error})

    def _create(self, body: bytes, reply: bytes | None) -> None:
        op_or_error = self.create_op(body)
        if isinstance(op_or_error, str):
            self._answer(reply, {"error": op_or_error})
        else:
            self._submit(op_or_error, reply)

    def create_op(self, body: bytes) -> ops.CreateOp | str:
        """Validate a CREATE body; the op to propose, or the error text."""
        try:
            options = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            return f"malformed JSON body: {exc}"
        if options is None:
            options = {}
        if not isinstance(options, dict):
            return "create body must be a JSON object"
        unknown = set(options) - {"ttl", "public", "name", "desc"}
        if unknown:
            return f"unknown create option(s): {', '.join(sorted(unknown))}"
        ttl, public, name, desc = (options.get("ttl", 0), options.get("public", False),
                                   options.get("name"), options.get("desc", ""))
        if ttl is None:
            ttl = 0
        if type(ttl) is not int or ttl < 0:
            return f"ttl must be a whole number of seconds >= 0 (got {ttl!r})"
        if self.max_ttl and ttl > self.max_ttl:
            return f"ttl {ttl} is over the limit of {self.max_ttl} seconds"
        if not isinstance(public, bool):
            return "public must be true or false"
        if desc is None:
            desc = ""
        if not isinstance(desc, str) or len(desc) > MAX_DESC:
            return f"desc must be a string of at most {MAX_DESC} characters"
        if public:
            if not isinstance(name, str) or not name:
                return "a public mailbox needs a name"
            problem = address_problem(name)
            if problem:
                return problem
            address = name
        else:
            if name is not None:
                return "name is only for public mailboxes (set \"public\": true)"
            address = new_private_address()
        return ops.CreateOp(address, now_ms(), ttl, public, desc, self.max_mailboxes)

    def _submit(self, op: ops.Op, reply: bytes | None) -> None:
        started = time.perf_counter()

        def answer(result: Any, error: BaseException | None) -> None:
            """Reply with the op's result; the common ``{"msg_id": N}`` without going through json."""
            SEND_ACK_SECONDS.observe(time.perf_counter() - started)
            if error is None and reply is not None and len(result) == 1 and "msg_id" in result:
                self.reply(reply, b'{"msg_id": %d}' % result["msg_id"])
            else:
                self._answer(reply, self._outcome(result, error))

        self.committer.submit_then(ops.encode(op), answer)

    @staticmethod
    def _result(done: asyncio.Future) -> dict[str, Any]:
        """The reply body for a settled ``submit`` future."""
        if done.cancelled():
            return {"error": "request cancelled, retry"}
        exc = done.exception()
        return MailboxService._outcome(None if exc else done.result(), exc)

    @staticmethod
    def _outcome(result: Any, exc: BaseException | None) -> dict[str, Any]:
        """The reply body for an op's result or its error."""
        if isinstance(exc, asyncio.CancelledError):
            return {"error": "request cancelled, retry"}
        if exc is not None and getattr(exc, "maybe_applied", False):
            return {"error": f"outcome unknown, it may still be committed: {exc}; retry"}
        if exc is not None:
            return {"error": f"not committed: {exc}; retry"}
        result = dict(result)
        if "mail_address" in result:
            result["mail_id"] = result["mail_address"]
        return result

    def _answer(self, reply: bytes | None, body: dict[str, Any]) -> None:
        if reply is not None:
            self.reply(reply, json.dumps(body).encode())
        elif "error" in body:
            log.debug("fire-and-forget mq9 request failed: %s", body["error"])

    def _read(self, reply: bytes | None, read: Callable[..., dict[str, Any]], *args: Any) -> None:
        async def serve() -> None:
            try:
                await self.barrier()
                body = read(*args)
            except Exception as exc:  # a failed barrier (no leader) is the client's retryable error
                body = {"error": f"read not possible now: {exc}; retry"}
            self._answer(reply, body)

        self._spawn(serve())

    def _list_messages(self, address: str) -> dict[str, Any]:
        if self.store.get_mailbox(address) is None:
            return {"error": f"mailbox {address} does not exist"}
        return {"messages": [{"msg_id": s.msg_id, "priority": SDK_PRIORITY_NAMES[s.priority],
                              "priority_name": PRIORITY_NAMES[s.priority], "ts": s.ts_ms}
                             for s in self.store.list_message_summaries(address)]}

    def _public_list(self) -> dict[str, Any]:
        return {"mailboxes": [{"mail_address": m.address, "desc": m.desc, "ttl": m.ttl,
                               "created_at": m.created_at, "expires_at": m.expires_at}
                              for m in self.store.public_mailboxes()]}

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, sub: Subscriber) -> bool:
        """Take a ``$mq9.`` subscription (True), leave it to plain NATS (False) or refuse it."""
        target = parse_subscription(sub.subject.decode("utf-8", "replace"))
        if isinstance(target, Receive):
            self.delivery.add_receiver(sub, target)
            return True
        if isinstance(target, PublicList) and sub.queue is None:
            self.delivery.add_watcher(sub)
            return True
        if isinstance(target, (Forbidden, PublicList)):
            subject = sub.subject.decode("utf-8", "replace")
            raise PermissionDenied(f'Permissions Violation for Subscription to "{subject}"')
        return False

    def unsubscribe(self, sub: Subscriber) -> None:
        """Stop delivering to a subscription the service took."""
        self.delivery.remove(sub)

    # -- queue-group claims and expiry --------------------------------------------------------

    async def _claim(self, address: str, group: str, levels: frozenset[int], limit: int) -> list[Message]:
        """Claim a queue group's next messages through the log; LookupError if the mailbox is gone."""
        result = await self.committer.submit(ops.encode(ops.ClaimOp(address, group, sorted(levels), limit)))
        if "error" in result:
            raise LookupError(result["error"])
        return self.store.get_messages(address, result["claimed"])

    def _fire(self, op: ops.Op) -> None:
        """Submit an op nobody waits for; a failure is logged (the next attempt covers it)."""
        self.committer.submit(ops.encode(op)).add_done_callback(self._log_failure)

    @staticmethod
    def _log_failure(done: asyncio.Future) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.warning("background mailbox op not committed: %s", done.exception())

    async def run_expiry(self, interval: float, legacy: bool = False) -> None:
        """While this node leads, propose the removal of mailboxes whose TTL has run out by the
        cluster clock; before the first clock report nothing, or with ``legacy`` (no node
        reports, see Settings.legacy_clock) by this node's own clock, as older releases did."""
        while True:
            await asyncio.sleep(interval)
            if not self.is_leader():
                continue
            stamp = ClusterClock.from_record(self.store.get_clock()).now or (now_ms() if legacy else 0)
            if not stamp:
                continue
            for due in self.store.due_expiries(stamp, limit=1000):
                self._fire(ops.ExpireOp(due.address, stamp))

    async def run_clock(self, reporter: str, voters: Callable[[], int], interval: float = REPORT_INTERVAL) -> None:
        """Report this node's wall clock and its count of voting members about every ``interval``,
        one report in flight at a time (see mailbox/clock.py)."""
        while True:
            try:
                await self.committer.submit(ops.encode(ops.ClockOp(reporter, now_ms(), voters())))
            except Exception as exc:  # no leader or cut off: the next report says the same
                log.debug("clock report not committed: %s", exc)
            await asyncio.sleep(interval)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
