"""Delivery: mailbox subscriptions get their backlog in priority order, then live arrivals.

Runs on the event loop. A new subscription first buffers live changes, waits for the read
barrier, replays a fixed view of the store (highest priority first, FIFO inside a level) at the
pace its connection drains, then flushes the buffer; a per-level cursor (last msg_id given)
drops whatever the replay already sent, so there is no gap and no duplicate. A barrier that
fails (no leader: an election, or this node is cut off) is tried again for as long as the
subscription lasts: a replay waits for a fresh view, it is never served stale nor given up. Queue
groups give each message to one member: they claim messages through the Raft log (see ``Group``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from mq9cluster.errors import ProposalFailed
from mq9cluster.mailbox.machine import Appended, Change, Created, Removed
from mq9cluster.mailbox.names import PRIORITY_NAMES, SDK_PRIORITY_NAMES
from mq9cluster.mailbox.subjects import PUBLIC_LIST, Receive
from mq9cluster.store import Mailbox, Message
from mq9cluster.store.reads import StoreReads

log = logging.getLogger("mq9cluster.delivery")

REPLAY_CHUNK = 512  # messages replayed between two yields to the event loop
CLAIM_PER_MEMBER = 64  # messages one claim asks for, per local member of the group
CLAIM_RETRY = 0.2  # seconds before claiming again after a claim failed at the Raft level
BARRIER_RETRY = 0.2  # seconds between read barriers for a replay while there is no leader
_PUBLIC_LIST = PUBLIC_LIST.encode()


class Claim(Protocol):
    """Claim a queue group's next messages through the log; LookupError if the mailbox is gone."""

    def __call__(self, address: str, group: str, levels: frozenset[int], limit: int) -> Awaitable[list[Message]]: ...


class Subscriber(Protocol):
    """What delivery needs of a client's subscription (the server implements it)."""

    subject: bytes
    queue: bytes | None

    @property
    def closed(self) -> bool: ...
    def send(self, subject: bytes, payload: bytes, headers: bytes | None) -> None: ...
    def pending(self) -> int: ...


def mq9_headers(message: Message) -> bytes:
    """The header block of a dialect-1 delivery: mq9 headers after any the sender gave."""
    own = (f"mq9-msg-id: {message.msg_id}\r\nmq9-priority: {PRIORITY_NAMES[message.priority]}\r\n"
           f"mq9-ts: {message.ts_ms}\r\n\r\n").encode()
    if message.headers and message.headers.startswith(b"NATS/1.0"):
        return message.headers[:-2] + own
    return b"NATS/1.0\r\n" + own


Frame = tuple[bytes, bytes, bytes | None]


def frame(message: Message, sdk: bool) -> Frame:
    """(subject, payload, headers) of one delivery in the receiver's dialect."""
    if sdk:
        level = SDK_PRIORITY_NAMES[message.priority]
        envelope = {"msg_id": message.msg_id, "payload": base64.b64encode(message.payload).decode(),
                    "priority": level, "ts": message.ts_ms}
        return f"$mq9.AI.MAILBOX.MSG.{message.address}.{level}".encode(), json.dumps(envelope).encode(), None
    subject = f"$mq9.AI.MAILBOX.{message.address}.{PRIORITY_NAMES[message.priority]}".encode()
    return subject, message.payload, mq9_headers(message)


class Receiver:
    """One subscription's progress: a cursor per level, and live changes held during replay."""

    __slots__ = ("sub", "target", "cursor", "held", "active")

    def __init__(self, sub: Subscriber, target: Receive) -> None:
        self.sub = sub
        self.target = target
        self.cursor: dict[int, int] = {}
        self.held: list[Message] | None = []  # None once replay is done
        self.active = True

    def wants(self, message: Message) -> bool:
        return message.priority in self.target.levels and message.msg_id > self.cursor.get(message.priority, 0)

    def give(self, message: Message, built: dict[bool, Frame] | None = None) -> None:
        self.cursor[message.priority] = message.msg_id
        sdk = self.target.sdk
        if built is None:
            self.sub.send(*frame(message, sdk))
            return
        framed = built.get(sdk)
        if framed is None:
            framed = built[sdk] = frame(message, sdk)
        self.sub.send(*framed)


class Group:
    """A queue group of one mailbox, as seen on this node: its local members and its claim loop.

    Which node delivers a message to the group is decided through the Raft log: a node with
    members claims the next unclaimed messages (``ClaimOp``) and hands what it was given to its
    own members in turn, so each message reaches exactly one member across the cluster.
    """

    __slots__ = ("address", "name", "members", "turn", "claiming", "again")

    def __init__(self, address: str, name: str) -> None:
        self.address = address
        self.name = name
        self.members: list[Receiver] = []
        self.turn = 0
        self.claiming = False  # a claim loop runs for this group
        self.again = False  # something arrived while it ran: claim once more before stopping

    def levels(self) -> frozenset[int]:
        """The priorities some live member takes."""
        return frozenset().union(*(m.target.levels for m in self.members if m.active and not m.sub.closed))

    def give(self, message: Message) -> bool:
        """Hand ``message`` to the next live member that takes its priority; False if none does."""
        eligible = [m for m in self.members if m.active and not m.sub.closed and message.priority in m.target.levels]
        if not eligible:
            return False
        eligible[self.turn % len(eligible)].give(message)
        self.turn += 1
        return True


class Delivery:
    """All mailbox and PUBLIC.LIST subscriptions of this node."""

    def __init__(
        self,
        store: StoreReads,
        barrier: Callable[[], Awaitable[None]],
        claim: Claim,
        replay_window: int,
    ) -> None:
        """``replay_window``: bytes queued to a client above which its replay waits for the socket."""
        self.store = store
        self.replay_window = replay_window
        self.barrier = barrier
        self.claim = claim
        self.receivers: dict[str, list[Receiver]] = {}
        self.groups: dict[str, dict[str, Group]] = {}  # address -> group name -> group
        self.watchers: dict[Subscriber, list[tuple[str, str, bytes]] | None] = {}
        self._tasks: set[asyncio.Task] = set()
        self._epoch = 0  # counts resyncs: a replay that began before one scans again after it
        self.arrivals: dict[str, list[asyncio.Future]] = {}  # address -> waiting long-poll fetches

    # -- subscriptions -----------------------------------------------------------------------

    def add_receiver(self, sub: Subscriber, target: Receive) -> None:
        """Start delivering ``target``'s mailbox to ``sub``: backlog first, then live."""
        receiver = Receiver(sub, target)
        if sub.queue is None:
            self.receivers.setdefault(target.address, []).append(receiver)
            self._spawn(self._replay_to(receiver))
            return
        name = sub.queue.decode()
        groups = self.groups.setdefault(target.address, {})
        group = groups.get(name)
        receiver.held = None
        if group is None:
            group = groups[name] = Group(target.address, name)
        group.members.append(receiver)
        self._claim_soon(group)

    def add_watcher(self, sub: Subscriber) -> None:
        """PUBLIC.LIST subscription: one ``created`` event per public mailbox, then live events."""
        self.watchers[sub] = []
        self._spawn(self._replay_public(sub))

    def remove(self, sub: Subscriber) -> None:
        """Stop every delivery to ``sub``."""
        self.watchers.pop(sub, None)
        for address, receivers in list(self.receivers.items()):
            for receiver in receivers:
                if receiver.sub is sub:
                    receiver.active = False
            kept = [r for r in receivers if r.active]
            if kept:
                self.receivers[address] = kept
            else:
                del self.receivers[address]
        for address, groups in list(self.groups.items()):
            for name, group in list(groups.items()):
                for member in group.members:
                    if member.sub is sub:
                        member.active = False
                group.members = [m for m in group.members if m.active]
                if not group.members:
                    del groups[name]
            if not groups:
                del self.groups[address]

    def arrival(self, address: str) -> asyncio.Future:
        """A future resolved when the next message for ``address`` is applied on this node."""
        future = asyncio.get_running_loop().create_future()
        self.arrivals.setdefault(address, []).append(future)
        return future

    def forget_arrival(self, address: str, future: asyncio.Future) -> None:
        """Drop a waiter that is done waiting."""
        waiting = self.arrivals.get(address)
        if waiting is not None and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self.arrivals[address]

    def _wake(self, address: str) -> None:
        for future in self.arrivals.pop(address, ()):
            if not future.done():
                future.set_result(None)

    def resync(self) -> None:
        """The store was replaced wholesale (a snapshot install): replay to every subscription
        again from its cursors, against the new store.

        Live changes are held meanwhile, as for a new subscription, and per-level cursors drop
        what was already given, so nothing is missed or given twice. A replay still running
        scans again once it is done. Queue groups claim again: messages that arrived inside the
        snapshot were never offered to them, and claims go through the log, so none is given
        twice. PUBLIC.LIST watchers are not affected: the caller hands the difference in public
        mailboxes to ``apply_changes``.
        """
        self._epoch += 1
        for address in list(self.arrivals):
            self._wake(address)
        for receivers in self.receivers.values():
            for receiver in receivers:
                if receiver.held is None:
                    receiver.held = []
                    self._spawn(self._replay_to(receiver, barrier=False))
        for groups in self.groups.values():
            for group in groups.values():
                self._claim_soon(group)  # what arrived inside the snapshot was never offered

    # -- changes from the state machine ------------------------------------------------------

    def apply_changes(self, changes: Iterable[Change]) -> None:
        """Fan committed changes out to this node's subscribers (called on the loop, in log order)."""
        for change in changes:
            kind = type(change)
            if kind is Appended:
                self._offer(change.message)
            elif kind is Created and change.mailbox.public:
                self._announce("created", change.mailbox)
            elif kind is Removed and change.mailbox.public:
                self._announce(change.reason, change.mailbox)

    def _offer(self, message: Message) -> None:
        address = message.address
        receivers = self.receivers.get(address)
        if receivers:
            built: dict[bool, Frame] = {}  # each dialect's frame is built once, for all receivers
            for receiver in receivers:
                if receiver.held is not None:
                    receiver.held.append(message)
                elif receiver.wants(message) and not receiver.sub.closed:
                    receiver.give(message, built)
        groups = self.groups.get(address)
        if groups:
            for group in groups.values():
                self._claim_soon(group)
        if address in self.arrivals:
            self._wake(address)

    @staticmethod
    def _event(event: str, mailbox: Mailbox) -> bytes:
        return json.dumps({"event": event, "mail_address": mailbox.address, "mail_id": mailbox.address,
                           "desc": mailbox.desc}).encode()

    def _announce(self, event: str, mailbox: Mailbox) -> None:
        payload = self._event(event, mailbox)
        for sub, held in self.watchers.items():
            if held is not None:
                held.append((event, mailbox.address, payload))
            elif not sub.closed:
                sub.send(_PUBLIC_LIST, payload, None)

    # -- replay ------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("replay failed", exc_info=task.exception())

    async def _paced(self, subs: list[Subscriber], count: int) -> None:
        """Yield every chunk; wait while every one of ``subs`` has a full send buffer."""
        if count % REPLAY_CHUNK == 0:
            await asyncio.sleep(0)
        while subs and all(not sub.closed and sub.pending() > self.replay_window for sub in subs):
            await asyncio.sleep(0.002)

    async def _fresh(self, wanted: Callable[[], bool]) -> bool:
        """Pass the read barrier, retrying while ``wanted()``; False if the replay is no longer wanted."""
        while True:
            try:
                await self.barrier()
                return True
            except ProposalFailed as exc:
                if not wanted():
                    return False
                log.debug("replay waits for a fresh view: %s", exc)
            await asyncio.sleep(BARRIER_RETRY)

    async def _replay_to(self, receiver: Receiver, barrier: bool = True) -> None:
        if barrier and not await self._fresh(lambda: receiver.active and not receiver.sub.closed):
            return
        target = receiver.target
        count = 0
        epoch = None
        view = None
        while epoch != self._epoch:  # once, or again after a resync during the scan
            epoch = self._epoch
            view = self.store.iter_messages(target.address, target.levels, after=dict(receiver.cursor))
            for message in view:
                if not receiver.active:
                    return
                receiver.give(message)
                count += 1
                await self._paced([receiver.sub], count)
                if receiver.sub.closed:
                    return
        # Held changes older than the view were replayed from it, or were deleted before it was
        # taken (a node catching up applies an append and its delete while the barrier waits).
        held, receiver.held = receiver.held or [], None
        for message in held:
            if view is not None and message.msg_id < view.next_msg_id:
                continue
            if receiver.active and receiver.wants(message) and not receiver.sub.closed:
                receiver.give(message)

    def _claim_soon(self, group: Group) -> None:
        if group.claiming:
            group.again = True
        else:
            group.claiming = True
            self._spawn(self._claim_for(group))

    async def _claim_for(self, group: Group) -> None:
        """Claim and hand out messages while the group has members here and messages come."""
        try:
            while group.members:
                group.again = False
                await self._paced([m.sub for m in group.members], 1)
                levels = group.levels()
                if not levels:
                    return
                limit = CLAIM_PER_MEMBER * len(group.members)
                try:
                    messages = await self.claim(group.address, group.name, levels, limit)
                except LookupError:
                    return  # the mailbox is gone
                except Exception as exc:  # Raft unavailable: the messages stay unclaimed
                    log.warning("queue group %s of %s: claim failed (%s); retrying", group.name, group.address, exc)
                    await asyncio.sleep(CLAIM_RETRY)
                    group.again = True
                    continue
                undelivered = sum(not group.give(message) for message in messages)
                if undelivered:
                    log.warning("queue group %s of %s: %d claimed messages had no member left on this node",
                                group.name, group.address, undelivered)
                if len(messages) < limit and not group.again:
                    return
        finally:
            group.claiming = False

    async def _replay_public(self, sub: Subscriber) -> None:
        if not await self._fresh(lambda: sub in self.watchers and not sub.closed):
            return
        announced = set()
        for mailbox in self.store.public_mailboxes():
            if sub.closed or sub not in self.watchers:
                return
            announced.add(mailbox.address)
            sub.send(_PUBLIC_LIST, self._event("created", mailbox), None)
        held = self.watchers.get(sub) or []
        if sub in self.watchers:
            self.watchers[sub] = None
        for event, address, payload in held:
            if not (event == "created" and address in announced):
                sub.send(_PUBLIC_LIST, payload, None)
