"""The mailbox state machine: applies committed batches of ops to the store, deterministically.

Runs on the Raft thread, in log order. It reads no clock and no randomness (times and ids ride
in the ops; the replicated cluster clock of mailbox/clock.py decides which time counts) and never
raises for a user error: those become ``{"error": ...}`` results. What changed is handed to
``on_changes`` (the delivery side, which moves it to the event loop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack

from mq9cluster import metrics
from mq9cluster.mailbox import agents, ops, pull
from mq9cluster.mailbox.clock import ClusterClock
from mq9cluster.mailbox.changes import Appended, Change, Created, MessageDeleted, Removed
from mq9cluster.store import Batch, Mailbox, Message, Store

__all__ = ["Appended", "Change", "Created", "MailboxMachine", "MessageDeleted", "Removed"]

Result = dict[str, Any]


def expired(mailbox: Mailbox, now_ms: int) -> bool:
    """Whether the mailbox's TTL has run out at ``now_ms``."""
    return bool(mailbox.expires_at) and mailbox.expires_at <= now_ms


def missing(address: str) -> Result:
    return {"error": f"mailbox {address} does not exist"}


class Totals(NamedTuple):
    """What the store holds in all: mailboxes, messages, bytes (payloads and headers).

    Derived from replicated state only (counted from the store at start and after a snapshot
    install, then moved by each committed batch's ``delta``, which the store's Batch keeps for
    every op kind), so every node has the same figures at the same index and the limits checked
    against them decide alike.
    """

    mailboxes: int = 0
    messages: int = 0
    bytes: int = 0

    def plus(self, delta: list[int]) -> "Totals":
        """These totals moved by a batch's [mailboxes, messages, bytes] delta."""
        return Totals(self.mailboxes + delta[0], self.messages + delta[1], self.bytes + delta[2])


class MailboxMachine:
    """Applies batches of mailbox ops onto the store."""

    def __init__(self, store: Store, on_changes: Callable[[list[Change]], None]) -> None:
        self.store = store
        self.on_changes = on_changes
        self.totals = Totals()
        self.clock = self._clock = ClusterClock()
        self.recount()

    def recount(self) -> None:
        """Count the totals and read the cluster clock from the store (at start, and after a
        snapshot replaced it)."""
        self.totals = Totals(*self.store.stored_totals())
        self.clock = self._clock = ClusterClock.from_record(self.store.get_clock())

    def last_applied(self) -> int:
        """The Raft index whose effects the store holds."""
        return self.store.last_applied()

    def apply_batch(self, index: int, raw_ops: list[bytes], proposal_id: bytes | None = None) -> list[Result]:
        """Apply one committed entry's ops in one atomic store batch; a result per op.

        A proposal id applied before (a retry of an entry that did commit) changes nothing but
        ``last_applied`` and returns the results of the first application.
        """
        batch = self.store.batch(index)
        if proposal_id is not None:
            earlier = batch.get_dedup(proposal_id)
            if earlier is not None:
                batch.commit()
                return msgpack.unpackb(earlier, raw=False, strict_map_key=False)
        changes: list[Change] = []
        self._clock = self.clock  # ClockOps in this entry move it for the ops after them
        results = [self._apply(batch, ops.decode(raw), changes) for raw in raw_ops]
        if proposal_id is not None:
            batch.put_dedup(proposal_id, msgpack.packb(results, use_bin_type=True))
        batch.commit()
        self.totals = self.totals.plus(batch.delta)
        self.clock = self._clock
        if changes:
            self.on_changes(changes)
        return results

    def _apply(self, batch: Batch, op: ops.Op, changes: list[Change]) -> Result:
        kind = type(op)
        if kind is ops.AppendOp:
            return self._append(batch, op, changes)
        if kind is ops.ClockOp:
            self._clock = self._clock.after(op)
            batch.put_clock(self._clock.record())
            return {}
        if kind is ops.CreateOp:
            return self._create(batch, op, changes)
        if kind is ops.DeleteMessageOp:
            return self._delete_message(batch, op, changes)
        if kind is ops.ExpireOp:
            return self._expire(batch, op, changes)
        if kind is ops.ClaimOp:
            return self._claim(batch, op)
        if kind is ops.SendOp:
            return pull.apply_send(batch, op, self._clock.at(op.now_ms), changes, self.totals.bytes + batch.delta[2])
        if kind is ops.FetchOp:
            return pull.apply_fetch(self.store, batch, op, self._clock.at(op.now_ms))
        if kind is ops.AckOp:
            return pull.apply_ack(batch, op)
        if kind is ops.TickOp:
            return pull.apply_tick(self.store, batch, self._clock.at(op.now_ms), op.limit, changes)
        if kind in (ops.RegisterOp, ops.UnregisterOp, ops.ReportOp):
            return agents.apply(batch, op)
        return self._group_progress(batch, op)

    def _append(self, batch: Batch, op: ops.AppendOp, changes: list[Change]) -> Result:
        now = self._clock.at(op.now_ms)
        expires_at = batch.expires_at(op.address)
        if expires_at is None or 0 < expires_at <= now.expiry:
            return missing(op.address)
        full = pull.storage_full(batch, op, self.totals.bytes + batch.delta[2])
        if full is not None:
            return full
        msg_id = batch.append_message(op.address, op.priority, now.stamp, op.payload, op.headers)
        changes.append(Appended(Message(op.address, op.priority, msg_id, now.stamp, op.payload, op.headers)))
        return {"msg_id": msg_id}

    def _create(self, batch: Batch, op: ops.CreateOp, changes: list[Change]) -> Result:
        now = self._clock.at(op.now_ms)
        existing = batch.get_mailbox(op.address)
        if existing is not None and expired(existing, now.expiry):
            batch.delete_mailbox(op.address)
            changes.append(Removed(existing, "expired"))
            metrics.EXPIRED_MAILBOXES.inc()
            existing = None
        if existing is not None:
            if existing.public and op.public:
                return {"mail_address": op.address, "is_new": False}
            return {"error": f"mail address {op.address} is already taken"}
        count = self.totals.mailboxes + batch.delta[0]
        if op.max_mailboxes and count >= op.max_mailboxes:
            return {"error": f"too many mailboxes: {count} exist, the limit is {op.max_mailboxes}"}
        # from the bounded stamp, not the cluster clock (about a second behind): a true clock's
        # mailbox then lives its full TTL, and a skewed one's at most SLACK_MS more or one lag less
        expires_at = now.stamp + op.ttl * 1000 if op.ttl else 0
        mailbox = batch.put_mailbox(Mailbox(op.address, now.stamp, op.ttl, expires_at, op.public, op.desc))
        changes.append(Created(mailbox))
        return {"mail_address": op.address, "is_new": True}

    def _delete_message(self, batch: Batch, op: ops.DeleteMessageOp, changes: list[Change]) -> Result:
        if batch.get_mailbox(op.address) is None:
            return missing(op.address)
        if not batch.delete_message(op.address, op.msg_id):
            return {"error": f"message {op.msg_id} does not exist in mailbox {op.address}"}
        changes.append(MessageDeleted(op.address, op.msg_id))
        return {"deleted": True}

    def _expire(self, batch: Batch, op: ops.ExpireOp, changes: list[Change]) -> Result:
        mailbox = batch.get_mailbox(op.address)
        if mailbox is None or not expired(mailbox, self._clock.at(op.now_ms).expiry):
            return {"expired": False}
        batch.delete_mailbox(op.address)
        changes.append(Removed(mailbox, "expired"))
        metrics.EXPIRED_MAILBOXES.inc()
        return {"expired": True}

    def _group_progress(self, batch: Batch, op: ops.GroupProgressOp) -> Result:
        if batch.get_mailbox(op.address) is None:
            return missing(op.address)
        batch.advance_group_cursor(op.address, op.group, op.cursor)
        return {}

    def _claim(self, batch: Batch, op: ops.ClaimOp) -> Result:
        """The group's next unclaimed messages, highest priority first; the cursor moves past them.

        Scans the store as committed before this entry (every node sees the same), so messages
        appended earlier in the same entry are left to the next claim.
        """
        if batch.get_mailbox(op.address) is None:
            return missing(op.address)
        cursor = batch.get_group_cursor(op.address, op.group)
        claimed: list[list[int]] = []
        if op.limit > 0:
            for message in self.store.iter_messages(op.address, op.levels, after=cursor):
                claimed.append([message.priority, message.msg_id])
                if len(claimed) >= op.limit:
                    break
        if claimed:
            advance: dict[int, int] = {}
            for priority, msg_id in claimed:
                advance[priority] = max(advance.get(priority, 0), msg_id)
            batch.advance_group_cursor(op.address, op.group, advance)
        return {"claimed": claimed}
