"""Dialect 3 requests, checked: SEND headers and FETCH / ACK / QUERY bodies become typed values.

Pure functions, no I/O: each parser returns its value or the error text for ``{"error": ...}``.
docs/mailboxes.md ("Dialect 3") documents every field and default.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from mq9cluster.mailbox.names import PRIORITY_NAMES, PRIORITY_WORDS
from mq9cluster.store import Message, Priority

MAX_KEY = 256
MAX_TAGS = 32
MAX_TAG = 64
MAX_GROUP = 128
MAX_DELAY_S = 365 * 86400
MAX_TTL_S = 365 * 86400
MAX_NUM_MSGS = 10_000
DEFAULT_NUM_MSGS = 100
MAX_WAIT_MS = 300_000
DEFAULT_WAIT_MS = 500
MAX_ACK_WAIT_MS = 86_400_000
DEFAULT_QUERY_LIMIT = 100
DELIVER = ("earliest", "latest", "from_time", "from_id")
_GROUP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass(frozen=True, slots=True)
class SendOptions:
    """What the ``mq9-*`` headers of a SEND ask for."""

    priority: int = int(Priority.NORMAL)
    key: str = ""
    tags: tuple[str, ...] = ()
    ttl_ms: int = 0
    delay_ms: int = 0


@dataclass(frozen=True, slots=True)
class Fetch:
    """A FETCH: stateless when ``group`` is empty."""

    group: str
    deliver: str
    start: int
    force: bool
    num_msgs: int
    max_wait_ms: int
    ack_wait_ms: int


@dataclass(frozen=True, slots=True)
class Ack:
    """An ACK of ``msg_ids`` by ``group``."""

    group: str
    msg_ids: list[int]


@dataclass(frozen=True, slots=True)
class Query:
    """A QUERY of stored messages by key, tags (all must match) and commit time."""

    key: str
    tags: frozenset[str]
    limit: int
    since: int


def header_values(block: bytes | None) -> dict[str, str]:
    """Header names (lower case) and values of a NATS header block; the first value of a name wins."""
    found: dict[str, str] = {}
    if not block:
        return found
    for line in block.decode("utf-8", "replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip():
            found.setdefault(name.strip().lower(), value.strip())
    return found


def _seconds(name: str, raw: str, limit: int) -> int | str:
    if not raw.isdigit() or int(raw) > limit:
        return f"{name} must be whole seconds from 0 to {limit} (got {raw!r})"
    return int(raw) * 1000


def tag_list(raw: str | list | None) -> list[str] | str:
    """Tags from a comma list (or a JSON list), checked."""
    if raw is None:
        return []
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        return "tags must be a comma list or a list of strings"
    tags = [t.strip() for t in items if t.strip()]
    if len(tags) > MAX_TAGS or any(len(t) > MAX_TAG or "," in t for t in tags):
        return f"at most {MAX_TAGS} tags of at most {MAX_TAG} characters each, without commas"
    return tags


def send_options(headers: bytes | None) -> SendOptions | str:
    """The options of a SEND from its ``mq9-*`` headers."""
    values = header_values(headers)
    priority = values.get("mq9-priority", "normal").lower()
    if priority not in PRIORITY_WORDS:
        return f"mq9-priority must be one of critical, urgent, high, normal, low (got {priority!r})"
    key = values.get("mq9-key", "")
    if len(key) > MAX_KEY:
        return f"mq9-key is longer than {MAX_KEY} characters"
    ttl = _seconds("mq9-ttl", values.get("mq9-ttl", "0"), MAX_TTL_S)
    delay = _seconds("mq9-delay", values.get("mq9-delay", "0"), MAX_DELAY_S)
    tags = tag_list(values.get("mq9-tags"))
    for checked in (ttl, delay, tags):
        if isinstance(checked, str):
            return checked
    assert isinstance(ttl, int) and isinstance(delay, int) and isinstance(tags, list)
    return SendOptions(PRIORITY_WORDS[priority], key, tuple(tags), ttl, delay)


def _object(body: bytes, allowed: set[str], what: str) -> dict[str, Any] | str:
    try:
        value = json.loads(body) if body.strip() else {}
    except ValueError as exc:
        return f"malformed JSON body: {exc}"
    if not isinstance(value, dict):
        return f"{what} body must be a JSON object"
    unknown = set(value) - allowed
    if unknown:
        return f"unknown {what} field(s): {', '.join(sorted(unknown))}"
    return value


def _int(value: Any, name: str, low: int, high: int) -> int | str:
    if type(value) is not int or not low <= value <= high:
        return f"{name} must be a whole number from {low} to {high} (got {value!r})"
    return value


def group_problem(group: Any) -> str | None:
    """Why ``group`` is not a usable group name, or None."""
    if not isinstance(group, str) or not 0 < len(group) <= MAX_GROUP or not set(group) <= _GROUP_CHARS:
        return f"group_name must be 1-{MAX_GROUP} characters of A-Z a-z 0-9 _ . - (got {group!r})"
    return None


def fetch_request(body: bytes) -> Fetch | str:
    """A FETCH body: ``group_name``, ``deliver``, ``from_time``, ``from_id``, ``force_deliver``, ``config``."""
    fields = _object(body, {"group_name", "deliver", "from_time", "from_id", "force_deliver", "config"}, "fetch")
    if isinstance(fields, str):
        return fields
    group = fields.get("group_name") or ""
    if group and (problem := group_problem(group)):
        return problem
    deliver = fields.get("deliver") or "earliest"
    if deliver not in DELIVER:
        return f"deliver must be one of {', '.join(DELIVER)} (got {deliver!r})"
    start: int | str = 0
    if deliver in ("from_time", "from_id"):
        start = _int(fields.get(deliver), deliver, 0, 2**63 - 1)
    elif "from_time" in fields or "from_id" in fields:
        start = f"from_time / from_id need deliver from_time / from_id (deliver is {deliver!r})"
    force = fields.get("force_deliver", False)
    if not isinstance(force, bool):
        return "force_deliver must be true or false"
    config = fields.get("config") or {}
    if not isinstance(config, dict) or set(config) - {"num_msgs", "max_wait_ms", "ack_wait_ms"}:
        return "config takes num_msgs, max_wait_ms and ack_wait_ms only"
    num = _int(config.get("num_msgs", DEFAULT_NUM_MSGS), "num_msgs", 1, MAX_NUM_MSGS)
    wait = _int(config.get("max_wait_ms", DEFAULT_WAIT_MS), "max_wait_ms", 0, MAX_WAIT_MS)
    ack_wait = _int(config.get("ack_wait_ms", 0), "ack_wait_ms", 0, MAX_ACK_WAIT_MS)
    for checked in (start, num, wait, ack_wait):
        if isinstance(checked, str):
            return checked
    if ack_wait and not group:
        return "ack_wait_ms is for a group (set group_name)"
    return Fetch(group, deliver, int(start), force, int(num), int(wait), int(ack_wait))


def ack_request(body: bytes) -> Ack | str:
    """An ACK body: ``group_name`` and ``msg_id`` or ``msg_ids``."""
    fields = _object(body, {"group_name", "msg_id", "msg_ids"}, "ack")
    if isinstance(fields, str):
        return fields
    if problem := group_problem(fields.get("group_name")):
        return problem
    ids = fields.get("msg_ids", [])
    if "msg_id" in fields:
        ids = [fields["msg_id"], *ids] if isinstance(ids, list) else ids
    if (not isinstance(ids, list) or not ids or len(ids) > MAX_NUM_MSGS
            or not all(type(i) is int and i > 0 for i in ids)):
        return f"give msg_id or msg_ids: 1 to {MAX_NUM_MSGS} msg_ids > 0"
    return Ack(fields["group_name"], ids)


def query_request(body: bytes) -> Query | str:
    """A QUERY body: ``key``, ``tags``, ``limit`` (default 100), ``since`` (unix ms)."""
    fields = _object(body, {"key", "tags", "limit", "since"}, "query")
    if isinstance(fields, str):
        return fields
    key = fields.get("key") or ""
    if not isinstance(key, str) or len(key) > MAX_KEY:
        return f"key must be a string of at most {MAX_KEY} characters"
    tags = tag_list(fields.get("tags"))
    limit = _int(fields.get("limit", DEFAULT_QUERY_LIMIT), "limit", 1, MAX_NUM_MSGS)
    since = _int(fields.get("since", 0), "since", 0, 2**63 - 1)
    for checked in (tags, limit, since):
        if isinstance(checked, str):
            return checked
    assert isinstance(tags, list)
    return Query(key, frozenset(tags), int(limit), int(since))


def message_view(message: Message, meta: tuple[str, list[str], int] | None,
                 redelivered: bool | None = None) -> dict[str, Any]:
    """One message in a FETCH or QUERY reply; a payload that is not UTF-8 goes as base64."""
    try:
        view: dict[str, Any] = {"msg_id": message.msg_id, "payload": message.payload.decode("utf-8")}
    except UnicodeDecodeError:
        view = {"msg_id": message.msg_id, "payload": base64.b64encode(message.payload).decode(),
                "payload_encoding": "base64"}
    view["priority"] = PRIORITY_NAMES[message.priority]
    view["ts"] = message.ts_ms
    if meta is not None:
        key, tags, expires_at = meta
        if key:
            view["key"] = key
        if tags:
            view["tags"] = tags
        if expires_at:
            view["expires_at"] = expires_at
    if redelivered is not None:
        view["redelivered"] = redelivered
    return view
