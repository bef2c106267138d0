"""Subject index: which subscriptions match a published subject (after nats-server's sublist.go).

Owns the token trie of subscription subjects and a bounded cache of match results. A pure data
structure: no asyncio, no I/O, no clock, no other mq9cluster import. Not thread-safe: the event
loop that owns the server owns its Sublist.

Subjects are bytes with b"."-separated tokens. In a subscription subject a whole b"*" token
matches exactly one token and a final b">" token matches one or more; b"foo*" is a literal.
Published subjects are matched as literals: a published b"*" token is an ordinary token, matched
only by the wildcards b"*" and b">" (as in nats-server).

Every trie node has a dict of literal children plus separate b"*" and b">" slots, so a match
walks the tokens of one subject, never the whole subscription list. Results are immutable and
cached per published subject (at most ``cache_max`` entries, the oldest half evicted when full).
Insert and remove keep the cache current: a literal subscription touches only its own entry, a
wildcard one scans the bounded cache for the subjects its pattern matches. Insert adds the
subscription to those entries; remove drops them, to be rebuilt on the next match.

Subjects that differ only in their last token, each published once (a request-reply client's
replies: ``_INBOX.<id>.<n>`` under one ``_INBOX.<id>.*``), would each miss that cache, walk the
trie and evict a useful entry. So a second bounded cache is kept per subject minus its last token
(the prefix): what matches the prefix followed by any one token (the wildcards), and the trie nodes
where a literal last token would continue. A subject whose last token is a literal child of none
of those nodes gets the prefix's result without a walk and without a cache entry of its own; any
other goes the full way. Any insert or remove clears the prefix cache (one ``dict.clear``).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any, Generic, Protocol, TypeVar

CACHE_MAX = 1024
"""Default bound of the match cache (nats-server's slCacheMax)."""

_PWC = b"*"
_FWC = b">"


class Subscription(Protocol):
    """What the index needs from a subscription; it is hashed by identity."""

    @property
    def subject(self) -> bytes: ...

    @property
    def queue(self) -> bytes | None: ...


S = TypeVar("S", bound=Subscription)


@dataclass(frozen=True, slots=True)
class SublistResult(Generic[S]):
    """Subscriptions matching one subject: ``plain`` ones, and ``queues`` with one tuple per
    queue group name (members of a group may have different subject patterns). Falsy if empty."""

    plain: tuple[S, ...]
    queues: tuple[tuple[S, ...], ...]

    def __bool__(self) -> bool:
        return bool(self.plain or self.queues)

    def with_sub(self, sub: S) -> SublistResult[S]:
        """A new result that also holds ``sub``."""
        if sub.queue is None:
            return SublistResult((*self.plain, sub), self.queues)
        for i, group in enumerate(self.queues):
            if group[0].queue == sub.queue:
                queues = (*self.queues[:i], (*group, sub), *self.queues[i + 1 :])
                return SublistResult(self.plain, queues)
        return SublistResult(self.plain, (*self.queues, (sub,)))


EMPTY: SublistResult[Any] = SublistResult((), ())
"""The shared result for a subject nothing matches."""


class _Node:
    """A trie node: subscriptions ending here, and the children one token further."""

    __slots__ = ("literal", "pwc", "fwc", "plain", "queues")

    def __init__(self) -> None:
        self.literal: dict[bytes, _Node] = {}
        self.pwc: _Node | None = None
        self.fwc: _Node | None = None
        self.plain: dict[Any, None] = {}  # an insertion-ordered set
        self.queues: dict[bytes, dict[Any, None]] = {}

    def child(self, token: bytes) -> _Node | None:
        if token == _PWC:
            return self.pwc
        if token == _FWC:
            return self.fwc
        return self.literal.get(token)

    def child_or_new(self, token: bytes) -> _Node:
        node = self.child(token)
        if node is None:
            node = _Node()
            if token == _PWC:
                self.pwc = node
            elif token == _FWC:
                self.fwc = node
            else:
                self.literal[token] = node
        return node

    def detach(self, token: bytes) -> None:
        if token == _PWC:
            self.pwc = None
        elif token == _FWC:
            self.fwc = None
        else:
            del self.literal[token]

    def add(self, sub: Subscription) -> bool:
        """Add ``sub``; False if it was already here."""
        members = self.plain if sub.queue is None else self.queues.setdefault(sub.queue, {})
        if sub in members:
            return False
        members[sub] = None
        return True

    def discard(self, sub: Subscription) -> bool:
        """Remove ``sub``; False if it was not here."""
        members = self.plain if sub.queue is None else self.queues.get(sub.queue)
        if members is None or sub not in members:
            return False
        del members[sub]
        if not members and sub.queue is not None:
            del self.queues[sub.queue]
        return True

    def is_empty(self) -> bool:
        no_subs = not (self.plain or self.queues)
        return no_subs and not self.literal and self.pwc is None and self.fwc is None

    def count(self) -> int:
        """Nodes below this one."""
        children = [*self.literal.values(), self.pwc, self.fwc]
        return sum(1 + child.count() for child in children if child is not None)


class Sublist(Generic[S]):
    """The subject index: insert and remove subscriptions, match published subjects."""

    def __init__(self, cache_max: int = CACHE_MAX) -> None:
        if cache_max < 1:
            raise ValueError("cache_max must be at least 1")
        self._root = _Node()
        self._count = 0
        self._cache: dict[bytes, SublistResult[S]] = {}
        self._cache_max = cache_max
        # prefix -> (result for the prefix + any last token, nodes a literal last token continues from)
        self._prefixes: dict[bytes, tuple[SublistResult[S], tuple[_Node, ...]]] = {}

    def __len__(self) -> int:
        """Number of subscriptions."""
        return self._count

    def insert(self, sub: S) -> None:
        """Add ``sub``; inserting the object already present is a no-op.

        ``sub.subject`` and ``sub.queue`` must not change while it is inserted. Raises ValueError
        for a subject with an empty token or a b">" before the last token.
        """
        tokens = sub.subject.split(b".")
        if b"" in tokens or _FWC in tokens[:-1]:
            raise ValueError(f"invalid subscription subject {sub.subject!r}")
        node = self._root
        for token in tokens:
            node = node.child_or_new(token)
        if not node.add(sub):
            return
        self._count += 1
        self._prefixes.clear()
        cache = self._cache
        if _PWC in tokens or _FWC in tokens:
            for key in self._cached_matches(tokens):
                cache[key] = cache[key].with_sub(sub)
        elif (cached := cache.get(sub.subject)) is not None:
            cache[sub.subject] = cached.with_sub(sub)

    def remove(self, sub: S) -> bool:
        """Remove ``sub`` and prune the nodes left empty; False if it was not inserted."""
        tokens = sub.subject.split(b".")
        path: list[tuple[_Node, bytes]] = []
        node = self._root
        for token in tokens:
            child = node.child(token)
            if child is None:
                return False
            path.append((node, token))
            node = child
        if not node.discard(sub):
            return False
        self._count -= 1
        self._prefixes.clear()
        for parent, token in reversed(path):
            if not node.is_empty():
                break
            parent.detach(token)
            node = parent
        if _PWC in tokens or _FWC in tokens:
            for key in self._cached_matches(tokens):
                del self._cache[key]
        else:
            self._cache.pop(sub.subject, None)
        return True

    def match(self, subject: bytes) -> SublistResult[S]:
        """Subscriptions matching the published ``subject`` (tokens taken literally).

        ``subject`` may also be a read-only memoryview of bytes; it is copied only on a cache
        miss. A subject with an empty token matches nothing and is not cached.
        """
        try:
            return self._cache[subject]
        except KeyError:
            pass
        subject = bytes(subject)
        prefix, _, last = subject.rpartition(b".")
        known = self._prefixes.get(prefix) if prefix and last else None
        if known is None:
            return self._match_uncached(subject)
        result, nodes = known
        for node in nodes:
            if last in node.literal:
                return self._match_uncached(subject)
        return result

    def has_interest(self, subject: bytes) -> bool:
        """Whether any subscription matches the published ``subject``."""
        return bool(self.match(subject))

    def cache_count(self) -> int:
        """Number of cached match results (for monitoring and tests)."""
        return len(self._cache)

    def prefix_count(self) -> int:
        """Number of cached prefix results (for tests)."""
        return len(self._prefixes)

    def node_count(self) -> int:
        """Number of trie nodes (for monitoring and tests); 0 when empty."""
        return self._root.count()

    def _match_uncached(self, subject: bytes) -> SublistResult[S]:
        tokens = subject.split(b".")
        if b"" in tokens:
            return EMPTY
        plain: list[S] = []
        queues: dict[bytes, list[S]] = {}
        _collect(self._root, tokens, 0, plain, queues)
        result = _result(plain, queues)
        self._store(self._cache, subject, result)
        if len(tokens) > 1:
            plain, queues, nodes = [], {}, []
            _collect_prefix(self._root, tokens, 0, plain, queues, nodes)
            # without a literal last token the full result is the prefix's too
            literal = any(tokens[-1] in node.literal for node in nodes)
            wildcards = _result(plain, queues) if literal else result
            self._store(self._prefixes, subject.rpartition(b".")[0], (wildcards, tuple(nodes)))
        return result

    def _store(self, cache: dict[bytes, Any], key: bytes, value: Any) -> None:
        """Put ``key`` in a bounded cache, first evicting its oldest half when full."""
        if len(cache) >= self._cache_max:
            for old in list(islice(cache, len(cache) - self._cache_max // 2)):
                del cache[old]
        cache[key] = value

    def _cached_matches(self, pattern: list[bytes]) -> list[bytes]:
        """Cached subjects that the wildcard ``pattern`` matches."""
        literal_len = 0
        while pattern[literal_len] not in (_PWC, _FWC):
            literal_len += 1
        prefix = b".".join(pattern[:literal_len]) + b"." if literal_len else b""
        return [
            key
            for key in self._cache
            if key.startswith(prefix) and _pattern_matches(pattern, key.split(b"."))
        ]


def _result(plain: list[Any], queues: dict[bytes, list[Any]]) -> SublistResult[Any]:
    return SublistResult(tuple(plain), tuple(map(tuple, queues.values()))) if plain or queues else EMPTY


def _collect(
    node: _Node, tokens: list[bytes], start: int, plain: list[Any], queues: dict[bytes, list[Any]]
) -> None:
    """Add the subscriptions under ``node`` that match ``tokens[start:]``."""
    for i in range(start, len(tokens)):
        if node.fwc is not None:
            _add_node(node.fwc, plain, queues)
        if node.pwc is not None:
            _collect(node.pwc, tokens, i + 1, plain, queues)
        next_node = node.literal.get(tokens[i])
        if next_node is None:
            return
        node = next_node
    _add_node(node, plain, queues)


def _collect_prefix(
    node: _Node, tokens: list[bytes], start: int, plain: list[Any], queues: dict[bytes, list[Any]],
    nodes: list[_Node],
) -> None:
    """``_collect`` for ``tokens`` with an unknown last token: add the subscriptions that match
    whatever it is (``_collect``'s order when it has no literal child), and list in ``nodes`` the
    nodes where it would be looked up as a literal child."""
    last = len(tokens) - 1
    for i in range(start, last):
        if node.fwc is not None:
            _add_node(node.fwc, plain, queues)
        if node.pwc is not None:
            _collect_prefix(node.pwc, tokens, i + 1, plain, queues, nodes)
        next_node = node.literal.get(tokens[i])
        if next_node is None:
            return
        node = next_node
    if node.fwc is not None:
        _add_node(node.fwc, plain, queues)
    if node.pwc is not None:
        _add_node(node.pwc, plain, queues)
    nodes.append(node)


def _add_node(node: _Node, plain: list[Any], queues: dict[bytes, list[Any]]) -> None:
    plain.extend(node.plain)
    for name, members in node.queues.items():
        group = queues.get(name)
        if group is None:
            queues[name] = list(members)
        else:
            group.extend(members)


def _pattern_matches(pattern: list[bytes], tokens: list[bytes]) -> bool:
    """Whether the subscription ``pattern`` matches the literal subject ``tokens``."""
    for i, want in enumerate(pattern):
        if want == _FWC:
            return len(tokens) > i
        if i >= len(tokens) or (want != _PWC and want != tokens[i]):
            return False
    return len(pattern) == len(tokens)
