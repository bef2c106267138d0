"""Dialect 3 apply: messages with options (key, tags, TTL, delay) and pull groups with acks.

Pure functions of (committed store, batch, op, the op's ``Now``), called by the machine on the
Raft thread. Whether a mailbox's TTL is over is decided by ``now.expiry`` (the cluster clock);
message times, delays, message TTLs and ack deadlines by ``now.stamp`` (the proposer's stamp
bounded by the cluster clock, see mailbox/clock.py). Scans read the store as committed before
the entry, overlaid with what the entry itself already changed.

A pull group has a per-priority cursor (the last msg_id handed to it at each level) and an
in-flight entry per message handed out and not acknowledged, with its ack-wait deadline; its
state also keeps ``next_due``, a lower bound of those deadlines (an ACK does not raise it), so a
fetch scans the in-flight set only once something may be due. A fetch
offers the in-flight messages whose deadline passed first in line with new ones, highest
priority first, and re-stamps their deadline: delivery to a group is at least once.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from mq9cluster.mailbox import ops
from mq9cluster.mailbox.changes import Appended, Change, MessageDeleted
from mq9cluster.mailbox.clock import Now
from mq9cluster.store import Batch, Message, Store

Result = dict[str, Any]
DEFAULT_ACK_WAIT_MS = 30_000
LEVELS = (0, 1, 2, 3)


def placement(deliver: str, start: int, next_msg_id: int) -> tuple[dict[int, int], int]:
    """(cursor, from_ts) of a reader that starts per ``deliver`` on a mailbox at ``next_msg_id``."""
    if deliver == "latest":
        return {level: next_msg_id - 1 for level in LEVELS}, 0
    if deliver == "from_id":
        return {level: max(start - 1, 0) for level in LEVELS}, 0
    if deliver == "from_time":
        return {}, start
    return {}, 0


def _missing(address: str) -> Result:
    return {"error": f"mailbox {address} does not exist"}


def _live(batch: Batch, address: str, now_ms: int) -> bool:
    expires_at = batch.expires_at(address)
    return expires_at is not None and not 0 < expires_at <= now_ms


def storage_full(batch: Batch, op: ops.AppendOp | ops.SendOp, stored_total: int, freed: int = 0) -> Result | None:
    """The error for a message that would pass the op's mailbox or all-mailbox byte limit, or None.

    ``stored_total`` is what all mailboxes hold as of this op (committed totals plus the batch);
    ``freed`` what storing the message deletes at once (the message it replaces by key).
    """
    size = len(op.payload) + (len(op.headers) if op.headers else 0)
    if op.max_bytes:
        stored = batch.get_mailbox(op.address).msg_bytes
        if stored - freed + size > op.max_bytes:
            return {"error": f"mailbox {op.address} is full: {stored} bytes stored, "
                             f"this message of {size} would pass the limit of {op.max_bytes}"}
    if op.max_total_bytes and stored_total - freed + size > op.max_total_bytes:
        return {"error": f"storage is full: {stored_total} bytes stored in all mailboxes, this message "
                         f"of {size} would pass the limit of {op.max_total_bytes}"}
    return None


def store_message(batch: Batch, changes: list[Change], address: str, priority: int, now_ms: int,
                  payload: bytes, headers: bytes | None, key: str, tags: list[str], ttl_ms: int) -> int:
    """Append a message with its options; a message already holding ``key`` is deleted."""
    if key:
        holder = batch.key_holder(address, key)
        if holder is not None and batch.delete_message(address, holder[1], holder[0]):
            changes.append(MessageDeleted(address, holder[1]))
    msg_id = batch.append_message(address, priority, now_ms, payload, headers)
    if key or tags or ttl_ms:
        batch.put_message_meta(address, priority, msg_id, key, tags, now_ms + ttl_ms if ttl_ms else 0)
    changes.append(Appended(Message(address, priority, msg_id, now_ms, payload, headers)))
    return msg_id


def apply_send(batch: Batch, op: ops.SendOp, now: Now, changes: list[Change], stored_total: int = 0) -> Result:
    """Store (or hold back) one message; ``stored_total``: bytes in all mailboxes as of this op.

    A message held back is checked against the limits now, as if stored now (without credit for
    the message its key would replace: that may change before it is released). It keeps the
    mailbox's ``created_at``, so that it is released only into that mailbox, not one created
    again under its name since.
    """
    if not _live(batch, op.address, now.expiry):
        return _missing(op.address)
    freed = 0
    if op.key and op.delay_ms <= 0 and (op.max_bytes or op.max_total_bytes):
        holder = batch.key_holder(op.address, op.key)
        freed = 0 if holder is None else batch.message_size(op.address, holder[1], holder[0])
    full = storage_full(batch, op, stored_total, freed)
    if full is not None:
        return full
    if op.delay_ms > 0:
        created_at = batch.get_mailbox(op.address).created_at
        batch.put_delayed(now.stamp + op.delay_ms, op.address,
                          [op.priority, op.payload, op.headers, op.key, op.tags, op.ttl_ms, created_at])
        return {"msg_id": -1}
    return {"msg_id": store_message(batch, changes, op.address, op.priority, now.stamp, op.payload,
                                    op.headers, op.key, op.tags, op.ttl_ms)}


def apply_tick(store: Store, batch: Batch, now: Now, limit: int, changes: list[Change]) -> Result:
    """Release the delayed messages due at ``now.stamp`` and delete messages whose TTL ended."""
    released = removed = 0
    for key, address, record in store.due_delayed(now.stamp, limit):
        mailbox = batch.get_mailbox(address) if batch.delete_raw(key) else None
        # record[6]: the mailbox's created_at at the send (before the cluster clock: the send's
        # time); a mailbox created again since the send is another mailbox: drop the message
        if mailbox is not None and not 0 < mailbox.expires_at <= now.expiry and mailbox.created_at <= record[6]:
            priority, payload, headers, msg_key, tags, ttl_ms, _ = record
            store_message(batch, changes, address, priority, now.stamp, payload, headers, msg_key, tags, ttl_ms)
            released += 1
    for key, address, msg_id in store.due_message_expiries(now.stamp, limit):
        if batch.delete_raw(key) and batch.has_mailbox(address) and batch.delete_message(address, msg_id):
            changes.append(MessageDeleted(address, msg_id))
            removed += 1
    return {"released": released, "expired": removed}


def _alive(store: Store, batch: Batch, address: str, ids: list[tuple[int, int]], now_ms: int) -> set[int]:
    """The msg_ids among ``ids`` that exist as of the batch and whose own TTL has not ended."""
    present = {m.msg_id for m in store.get_messages(address, ids) if not batch.message_gone(address, m.msg_id)}
    meta = store.get_message_meta(address, sorted(present))
    return {i for i in present if not (i in meta and 0 < meta[i][2] <= now_ms)}


def _due_again(store: Store, batch: Batch, op: ops.FetchOp, now_ms: int) -> tuple[list[tuple[int, int]], int]:
    """(priority, msg_id) of in-flight messages whose ack-wait ran out (vanished ones are dropped),
    and the earliest deadline of the others (0: none)."""
    touched = batch.touched_inflight(op.address, op.group)
    entries = [(i, p, deadline) for i, p, deadline in store.inflight(op.address, op.group) if i not in touched]
    entries += [(i, entry[0], entry[1]) for i, entry in touched.items() if entry is not None]
    due = [(p, i) for i, p, deadline in entries if deadline <= now_ms]
    later = min((deadline for _, _, deadline in entries if deadline > now_ms), default=0)
    alive = _alive(store, batch, op.address, due, now_ms)
    for _, msg_id in due:
        if msg_id not in alive:
            batch.drop_inflight(op.address, op.group, msg_id)
    return [(p, i) for p, i in due if i in alive], later


def apply_fetch(store: Store, batch: Batch, op: ops.FetchOp, now: Now) -> Result:
    mailbox = batch.get_mailbox(op.address)
    if mailbox is None or 0 < mailbox.expires_at <= now.expiry:
        return _missing(op.address)
    state = batch.get_pull_group(op.address, op.group)
    if state is None or op.force:
        cursor, from_ts = placement(op.deliver, op.start, mailbox.next_msg_id)
        state = {"cursor": cursor, "from_ts": from_ts,
                 "ack_wait": state["ack_wait"] if state else DEFAULT_ACK_WAIT_MS}
    if op.ack_wait_ms > 0:
        state["ack_wait"] = op.ack_wait_ms
    cursor = dict(state["cursor"])
    next_due = state.get("next_due", 0)  # no in-flight deadline is earlier (0: unknown, look)
    if next_due and now.stamp < next_due:
        again: list[tuple[int, int]] = []
    else:
        again, next_due = _due_again(store, batch, op, now.stamp)
    scanned: list[tuple[int, int, bool]] = []  # (priority, msg_id, deliverable) in scan order
    fresh = 0
    messages = iter(store.iter_messages(op.address, None, after=cursor))
    while fresh < op.limit:  # chunks of what is still wanted: one multi-get of options per chunk
        chunk = list(islice(messages, op.limit - fresh))
        if not chunk:
            break
        meta = store.get_message_meta(op.address, [m.msg_id for m in chunk])
        for message in chunk:
            expires_at = meta[message.msg_id][2] if message.msg_id in meta else 0
            ok = (not batch.message_gone(op.address, message.msg_id) and message.ts_ms >= state["from_ts"]
                  and not 0 < expires_at <= now.stamp)
            scanned.append((message.priority, message.msg_id, ok))
            fresh += ok
    pool = sorted([(p, i, True) for p, i in again] + [(p, i, False) for p, i, ok in scanned if ok],
                  key=lambda e: (-e[0], e[1]))[:op.limit]
    taken_new = sum(1 for e in pool if not e[2])
    for priority, msg_id, ok in scanned:  # the cursor passes what was taken and what it skipped
        if taken_new == 0 and ok:
            break
        cursor[priority] = max(cursor.get(priority, 0), msg_id)
        taken_new -= ok
    deadline = now.stamp + state["ack_wait"]
    for priority, msg_id, _ in pool:
        batch.put_inflight(op.address, op.group, msg_id, priority, deadline)
    if pool:
        next_due = min(next_due, deadline) if next_due else deadline
    state["cursor"], state["next_due"] = cursor, next_due
    batch.put_pull_group(op.address, op.group, state)
    return {"messages": [[p, i, int(again_)] for p, i, again_ in pool]}


def apply_ack(batch: Batch, op: ops.AckOp) -> Result:
    if not batch.has_mailbox(op.address):
        return _missing(op.address)
    if batch.get_pull_group(op.address, op.group) is None:
        return {"error": f"group {op.group} has fetched nothing from mailbox {op.address}"}
    for msg_id in op.msg_ids:
        batch.drop_inflight(op.address, op.group, msg_id)
    return {"acked": len(op.msg_ids)}
