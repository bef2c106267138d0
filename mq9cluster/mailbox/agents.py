"""The agent registry: REGISTER / UNREGISTER / REPORT apply onto the store, DISCOVER ranks cards.

A card is a JSON object keyed by its ``mailbox`` (a mail address). Registry changes are Raft ops
like any other; DISCOVER is a read after the barrier on whichever node is asked. ``text`` ranks
cards by keywords (BM25 over every string in the card, the name counting three times).
``semantic`` ranks by meaning when an embedding model is installed (see ``Embedder``); without
one it falls back to keyword ranking and says so in ``note``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mq9cluster.mailbox import ops
from mq9cluster.mailbox.names import address_problem
from mq9cluster.store import Batch

Result = dict[str, Any]
MAX_CARD = 64 * 1024
MAX_LIMIT = 1000
DEFAULT_LIMIT = 10
_WORD = re.compile(r"[a-z0-9]+")
SEMANTIC_MISSING = ("semantic search needs an embedding model (pip install 'mq9cluster[semantic]'); "
                    "ranked by keywords instead")


# -- apply (Raft thread) -------------------------------------------------------------------------

def apply(batch: Batch, op: ops.RegisterOp | ops.UnregisterOp | ops.ReportOp) -> Result:
    """One registry op onto the batch; user errors become results."""
    record = batch.get_agent(op.mailbox)
    if isinstance(op, ops.RegisterOp):
        registered_at = record[1] if record else op.now_ms
        report, reported_at = (record[3], record[4]) if record else ("", 0)
        batch.put_agent(op.mailbox, [op.card, registered_at, op.now_ms, report, reported_at])
        return {"mailbox": op.mailbox, "is_new": record is None}
    if record is None:
        return {"error": f"no agent is registered for mailbox {op.mailbox}"}
    if isinstance(op, ops.UnregisterOp):
        batch.delete_agent(op.mailbox)
        return {"mailbox": op.mailbox}
    batch.put_agent(op.mailbox, [record[0], record[1], record[2], op.report, op.now_ms])
    return {"mailbox": op.mailbox}


# -- request bodies ------------------------------------------------------------------------------

def _json_object(body: bytes, what: str) -> dict[str, Any] | str:
    if len(body) > MAX_CARD:
        return f"{what} body is over {MAX_CARD} bytes"
    try:
        value = json.loads(body) if body.strip() else None
    except ValueError as exc:
        return f"malformed JSON body: {exc}"
    return value if isinstance(value, dict) else f"{what} body must be a JSON object"


def _mailbox_of(fields: dict[str, Any]) -> str | None:
    mailbox = fields.get("mailbox")
    if not isinstance(mailbox, str):
        return None
    return None if address_problem(mailbox) else mailbox


def register_op(body: bytes, now_ms: int) -> ops.RegisterOp | str:
    """REGISTER: the card, a JSON object with a valid ``mailbox``."""
    card = _json_object(body, "register")
    if isinstance(card, str):
        return card
    mailbox = _mailbox_of(card)
    if mailbox is None:
        return f"the card needs a valid \"mailbox\" (a mail address), got {card.get('mailbox')!r}"
    return ops.RegisterOp(mailbox, now_ms, json.dumps(card, separators=(",", ":")))


def unregister_op(body: bytes) -> ops.UnregisterOp | str:
    """UNREGISTER: ``{"mailbox": A}``."""
    fields = _json_object(body, "unregister")
    if isinstance(fields, str):
        return fields
    if set(fields) - {"mailbox"} or _mailbox_of(fields) is None:
        return "unregister takes {\"mailbox\": A} with a valid mail address"
    return ops.UnregisterOp(fields["mailbox"])


def report_op(body: bytes, now_ms: int) -> ops.ReportOp | str:
    """REPORT: ``{"mailbox": A, ...}``; the rest of the object is stored as the agent's report."""
    fields = _json_object(body, "report")
    if isinstance(fields, str):
        return fields
    mailbox = _mailbox_of(fields)
    if mailbox is None:
        return "a report needs a valid \"mailbox\" (a mail address)"
    report = {k: v for k, v in fields.items() if k != "mailbox"}
    return ops.ReportOp(mailbox, now_ms, json.dumps(report, separators=(",", ":")))


@dataclass(frozen=True, slots=True)
class Discover:
    """A DISCOVER: keyword ``text`` or natural-language ``semantic`` (or neither: every card)."""

    text: str
    semantic: str
    limit: int
    page: int


def discover_request(body: bytes) -> Discover | str:
    """DISCOVER: ``text``, ``semantic``, ``limit`` (default 10), ``page`` (from 1)."""
    fields = _json_object(body or b"{}", "discover")
    if isinstance(fields, str):
        return fields
    unknown = set(fields) - {"text", "semantic", "limit", "page"}
    if unknown:
        return f"unknown discover field(s): {', '.join(sorted(unknown))}"
    text, semantic = fields.get("text") or "", fields.get("semantic") or ""
    limit, page = fields.get("limit", DEFAULT_LIMIT), fields.get("page", 1)
    if not isinstance(text, str) or not isinstance(semantic, str):
        return "text and semantic must be strings"
    if type(limit) is not int or not 0 < limit <= MAX_LIMIT:
        return f"limit must be a whole number from 1 to {MAX_LIMIT}"
    if type(page) is not int or page < 1:
        return "page must be a whole number from 1"
    return Discover(text, semantic, limit, page)


# -- ranking (reads) -----------------------------------------------------------------------------

def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words."""
    return _WORD.findall(text.lower())


def card_text(card: dict[str, Any]) -> str:
    """Every string of a card in one text; the name three times (it says most about the agent)."""
    name = card.get("name") if isinstance(card.get("name"), str) else ""
    return " ".join([name, name, *_strings(card)])


def rank_by_text(query: str, texts: Sequence[str]) -> list[tuple[int, float]]:
    """(index, score) of the texts matching any query word, best first (BM25, k1=1.2, b=0.75)."""
    wanted = set(words(query))
    if not wanted:
        return []
    bags = [Counter(words(text)) for text in texts]
    average = sum(sum(bag.values()) for bag in bags) / max(len(bags), 1) or 1.0
    frequency = {word: sum(1 for bag in bags if word in bag) for word in wanted}
    scored = []
    for index, bag in enumerate(bags):
        length, score = sum(bag.values()), 0.0
        for word in wanted:
            tf = bag.get(word, 0)
            if tf:
                idf = math.log(1 + (len(bags) - frequency[word] + 0.5) / (frequency[word] + 0.5))
                score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / average))
        if score > 0:
            scored.append((index, score))
    scored.sort(key=lambda pair: (-pair[1], pair[0]))
    return scored


class Embedder(Protocol):
    """Sentence embeddings: one unit-length vector per text."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


def rank_by_meaning(embedder: Embedder, query: str, texts: Sequence[str],
                    cache: dict[str, list[float]]) -> list[tuple[int, float]]:
    """(index, cosine similarity) of every text, best first; card vectors are cached by text."""
    missing = [text for text in dict.fromkeys(texts) if text not in cache]
    if missing:
        cache.update(zip(missing, embedder.embed(missing), strict=True))
    (target,) = embedder.embed([query])
    scored = [(i, sum(a * b for a, b in zip(target, cache[text], strict=True))) for i, text in enumerate(texts)]
    scored.sort(key=lambda pair: (-pair[1], pair[0]))
    return scored


def load_embedder() -> Embedder | None:
    """The optional embedding model, or None when the ``semantic`` extra is not installed."""
    try:
        from mq9cluster.mailbox.embedding import MiniLM  # the extra's dependencies load here
    except ImportError:
        return None
    try:
        return MiniLM()
    except Exception:  # installed but not loadable (no weights): same as missing
        return None


def card_view(mailbox: str, record: list, score: float | None) -> dict[str, Any]:
    """One agent in a DISCOVER reply."""
    card, registered_at, updated_at, report, reported_at = record
    view: dict[str, Any] = {"mailbox": mailbox, "card": json.loads(card), "registered_at": registered_at,
                            "updated_at": updated_at}
    if report:
        view["report"] = json.loads(report)
        view["reported_at"] = reported_at
    if score is not None:
        view["score"] = round(score, 4)
    return view
