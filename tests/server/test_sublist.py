"""Tests of the subject index: matching semantics, queue groups, pruning and the match cache."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mq9cluster.server.sublist import CACHE_MAX, EMPTY, Sublist, SublistResult


@dataclass(eq=False)
class Sub:
    """A subscription as the index sees it: subject, optional queue, identity hash."""

    subject: bytes
    queue: bytes | None = None


def subjects_of(result: SublistResult[Sub]) -> set[bytes]:
    return {sub.subject for sub in result.plain}


def groups_of(result: SublistResult[Sub]) -> dict[bytes | None, set[Sub]]:
    return {group[0].queue: set(group) for group in result.queues}


def index_of(*subs: Sub) -> Sublist[Sub]:
    sublist: Sublist[Sub] = Sublist()
    for sub in subs:
        sublist.insert(sub)
    return sublist


MATCH_TABLE = [
    (b"foo", [b"foo"], [b"foo.bar", b"fo", b"bar"]),
    (b"foo.bar", [b"foo.bar"], [b"foo", b"foo.bar.baz", b"foo.baz", b"bar.foo"]),
    (b"*", [b"foo", b"*", b">"], [b"foo.bar"]),
    (b"foo.*", [b"foo.bar", b"foo.*", b"foo.>"], [b"foo", b"foo.bar.baz", b"bar.foo"]),
    (b"*.bar", [b"foo.bar", b"x.bar"], [b"bar", b"foo.baz", b"foo.bar.baz"]),
    (b"foo.*.baz", [b"foo.x.baz"], [b"foo.baz", b"foo.x.y.baz", b"foo.x.bar"]),
    (b">", [b"foo", b"foo.bar", b"a.b.c.d"], []),
    (b"foo.>", [b"foo.bar", b"foo.bar.baz", b"foo.>"], [b"foo", b"bar.foo"]),
    (b"*.*.>", [b"a.b.c", b"a.b.c.d"], [b"a", b"a.b"]),
    (b"foo.*.bar.>", [b"foo.x.bar.y", b"foo.x.bar.y.z"], [b"foo.x.bar", b"foo.bar.y"]),
    (b"foo*", [b"foo*"], [b"foo", b"foobar", b"foo.bar"]),
    (b"foo.b*r", [b"foo.b*r"], [b"foo.bar", b"foo.b"]),
    (b"foo.>x", [b"foo.>x"], [b"foo.bar", b"foo.bar.baz"]),
]
"""Subscription patterns, published subjects they match, and some they do not."""


@pytest.mark.parametrize(("pattern", "matching", "not_matching"), MATCH_TABLE)
def test_pattern_matches_exactly_its_subjects(
    pattern: bytes, matching: list[bytes], not_matching: list[bytes]
) -> None:
    sub = Sub(pattern)
    sublist = index_of(sub)
    for subject in matching:
        assert sublist.match(subject).plain == (sub,), subject
        assert sublist.has_interest(subject)
    for subject in not_matching:
        assert sublist.match(subject) is EMPTY, subject
        assert not sublist.has_interest(subject)


@pytest.mark.parametrize(("pattern", "matching", "not_matching"), MATCH_TABLE)
def test_cached_results_follow_insert_and_remove(
    pattern: bytes, matching: list[bytes], not_matching: list[bytes]
) -> None:
    sub, other = Sub(pattern), Sub(b"other.subject")
    sublist = index_of(other)
    for subject in matching + not_matching:
        assert sublist.match(subject) is EMPTY
    sublist.insert(sub)
    for subject in matching:
        assert sublist.match(subject).plain == (sub,), subject
    for subject in not_matching:
        assert sublist.match(subject) is EMPTY, subject
    sublist.remove(sub)
    for subject in matching + not_matching:
        assert sublist.match(subject) is EMPTY, subject


def test_published_wildcard_tokens_are_literal() -> None:
    literal, star, tail = Sub(b"foo.bar"), Sub(b"foo.*"), Sub(b"foo.>")
    sublist = index_of(literal, star, tail)
    assert set(sublist.match(b"foo.*").plain) == {star, tail}
    assert set(sublist.match(b"foo.>").plain) == {star, tail}
    assert set(sublist.match(b"foo.bar").plain) == {literal, star, tail}


def test_every_matching_pattern_contributes() -> None:
    patterns = [b"a.b.c", b"a.*.c", b"a.b.*", b"*.b.c", b"a.>", b">", b"*.*.*", b"a.b", b"a.b.c.d"]
    sublist = index_of(*(Sub(p) for p in patterns))
    assert subjects_of(sublist.match(b"a.b.c")) == {
        b"a.b.c", b"a.*.c", b"a.b.*", b"*.b.c", b"a.>", b">", b"*.*.*"
    }
    assert subjects_of(sublist.match(b"a.b")) == {b"a.b", b"a.>", b">"}
    assert subjects_of(sublist.match(b"z")) == {b">"}


def test_queue_group_spans_patterns() -> None:
    q1 = [Sub(b"foo.bar", b"q1"), Sub(b"foo.*", b"q1"), Sub(b">", b"q1")]
    q2 = [Sub(b"foo.bar", b"q2")]
    plain = Sub(b"foo.bar")
    sublist = index_of(*q1, *q2, plain)
    result = sublist.match(b"foo.bar")
    assert result.plain == (plain,)
    assert len(result.queues) == 2
    assert groups_of(result) == {b"q1": set(q1), b"q2": set(q2)}
    assert groups_of(sublist.match(b"other")) == {b"q1": {q1[2]}}


def test_cached_result_grows_an_existing_queue_group() -> None:
    first, second = Sub(b"foo.bar", b"q"), Sub(b"*.bar", b"q")
    sublist = index_of(first)
    assert groups_of(sublist.match(b"foo.bar")) == {b"q": {first}}
    sublist.insert(second)
    assert groups_of(sublist.match(b"foo.bar")) == {b"q": {first, second}}


def test_empty_result_is_falsy_and_others_truthy() -> None:
    assert not EMPTY
    assert EMPTY.plain == () and EMPTY.queues == ()
    sublist = index_of(Sub(b"plain"), Sub(b"queued", b"q"))
    assert sublist.match(b"nothing") is EMPTY
    assert sublist.match(b"plain")
    assert sublist.match(b"queued")


def test_invalid_published_subjects_match_nothing_and_are_not_cached() -> None:
    sublist = index_of(Sub(b">"), Sub(b"*.*"))
    for subject in (b"", b".", b"foo.", b".foo", b"foo..bar"):
        assert sublist.match(subject) is EMPTY
    assert sublist.cache_count() == 0


def test_invalid_subscription_subject_is_rejected_without_trace() -> None:
    sublist: Sublist[Sub] = Sublist()
    for subject in (b"", b"foo.", b".foo", b"foo..bar", b">.foo", b"foo.>.bar"):
        with pytest.raises(ValueError):
            sublist.insert(Sub(subject))
    assert len(sublist) == 0
    assert sublist.node_count() == 0


def test_remove() -> None:
    keep, gone, queued = Sub(b"foo.bar"), Sub(b"foo.*"), Sub(b"foo.bar", b"q")
    sublist = index_of(keep, gone, queued)
    assert len(sublist) == 3
    assert sublist.remove(gone) is True
    assert sublist.remove(gone) is False
    assert sublist.remove(Sub(b"foo.bar")) is False  # equal fields, other object
    assert sublist.remove(Sub(b"foo.bar", b"other")) is False
    assert sublist.remove(Sub(b"never.inserted")) is False
    assert sublist.remove(Sub(b"foo..bar")) is False
    assert len(sublist) == 2
    result = sublist.match(b"foo.bar")
    assert result.plain == (keep,)
    assert groups_of(result) == {b"q": {queued}}
    assert sublist.remove(queued) is True
    assert sublist.match(b"foo.bar").queues == ()


def test_removal_prunes_empty_nodes() -> None:
    patterns = [b"a", b"a.b", b"a.b.c", b"a.*.c", b"a.>", b"*", b">", b"*.*.>", b"x.y.z.w"]
    subs = [Sub(p) for p in patterns] + [Sub(p, b"q") for p in patterns]
    sublist = index_of(*subs)
    assert sublist.node_count() == 14
    deep, shallow = Sub(b"m.n.o"), Sub(b"m")
    sublist.insert(deep)
    sublist.insert(shallow)
    assert sublist.node_count() == 17
    sublist.remove(deep)
    assert sublist.node_count() == 15  # b"m" still holds a subscription
    sublist.remove(shallow)
    assert sublist.node_count() == 14
    for sub in subs:
        assert sublist.remove(sub)
    assert len(sublist) == 0
    assert sublist.node_count() == 0


def test_duplicate_insert_is_a_no_op() -> None:
    sub, queued = Sub(b"foo.*"), Sub(b"foo.bar", b"q")
    sublist = index_of(sub, queued)
    assert sublist.match(b"foo.bar").plain == (sub,)  # now cached
    sublist.insert(sub)
    sublist.insert(queued)
    assert len(sublist) == 2
    result = sublist.match(b"foo.bar")
    assert result.plain == (sub,)
    assert result.queues == ((queued,),)
    assert sublist.remove(sub) is True
    assert sublist.remove(sub) is False
    assert sublist.match(b"foo.bar").plain == ()


def test_results_are_immutable_snapshots() -> None:
    first = Sub(b"foo.*")
    sublist = index_of(first)
    result = sublist.match(b"foo.bar")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.plain = ()  # type: ignore[misc]
    second = Sub(b"foo.bar")
    sublist.insert(second)
    sublist.remove(first)
    assert result.plain == (first,)
    assert sublist.match(b"foo.bar").plain == (second,)


def test_cache_hit_returns_the_same_result() -> None:
    sublist = index_of(Sub(b"foo.*"))
    result = sublist.match(b"foo.bar")
    assert sublist.cache_count() == 1
    assert sublist.match(b"foo.bar") is result
    assert sublist.match(memoryview(b"xfoo.bar")[1:]) is result


def test_memoryview_subject_is_cached_as_bytes() -> None:
    sublist = index_of(Sub(b"foo.*"))
    buffer = bytearray(b"foo.bar")
    result = sublist.match(memoryview(bytes(buffer)))
    buffer[:] = b"zzz.zzz"
    assert sublist.match(b"foo.bar") is result
    assert sublist.match(b"zzz.zzz") is EMPTY


def test_insert_and_remove_touch_only_matching_cache_entries() -> None:
    sublist = index_of(Sub(b"a.b"), Sub(b"x.y"))
    ab, xy = sublist.match(b"a.b"), sublist.match(b"x.y")
    wildcard = Sub(b"a.*")
    sublist.insert(wildcard)
    assert sublist.match(b"x.y") is xy
    assert sublist.match(b"a.b") is not ab
    assert wildcard in sublist.match(b"a.b").plain
    ab = sublist.match(b"a.b")
    literal = Sub(b"x.y")
    sublist.insert(literal)
    assert sublist.match(b"a.b") is ab
    assert literal in sublist.match(b"x.y").plain
    xy = sublist.match(b"x.y")
    sublist.remove(wildcard)
    assert sublist.match(b"x.y") is xy
    assert wildcard not in sublist.match(b"a.b").plain
    assert sublist.cache_count() == 2


def test_cache_is_bounded() -> None:
    sublist = index_of(Sub(b"s.*.x"), Sub(b">", b"q"))
    assert CACHE_MAX == 1024
    for i in range(3 * CACHE_MAX):
        subject = b"s.%d.x" % i  # a new prefix each time: both caches fill
        result = sublist.match(subject)
        assert subjects_of(result) == {b"s.*.x"}
        assert len(result.queues) == 1
        assert sublist.cache_count() <= CACHE_MAX
        assert sublist.prefix_count() <= CACHE_MAX
    assert sublist.cache_count() > CACHE_MAX // 2
    assert sublist.prefix_count() > CACHE_MAX // 2


def test_replies_under_one_wildcard_share_one_prefix_entry() -> None:
    inbox = Sub(b"_INBOX.abc.*")
    sublist = index_of(inbox, Sub(b"_INBOX.other.*"))
    first = sublist.match(b"_INBOX.abc.0")
    for i in range(1, 3 * CACHE_MAX):
        assert sublist.match(b"_INBOX.abc.%d" % i) is first
    assert first.plain == (inbox,)
    assert sublist.cache_count() == 1 and sublist.prefix_count() == 1
    assert sublist.match(b"_INBOX.abc") is EMPTY
    assert sublist.match(b"_INBOX.abc.1.2") is EMPTY


@pytest.mark.parametrize("warm_first", [True, False])
def test_literal_subscription_on_one_reply_subject(warm_first: bool) -> None:
    inbox, literal, deeper = Sub(b"_INBOX.abc.*"), Sub(b"_INBOX.abc.7"), Sub(b"_INBOX.abc.9.x")
    sublist = index_of(inbox)
    if warm_first:
        assert sublist.match(b"_INBOX.abc.1").plain == (inbox,)
    sublist.insert(literal)
    sublist.insert(deeper)
    assert set(sublist.match(b"_INBOX.abc.7").plain) == {inbox, literal}
    assert sublist.match(b"_INBOX.abc.8").plain == (inbox,)
    assert sublist.match(b"_INBOX.abc.9").plain == (inbox,)
    assert sublist.match(b"_INBOX.abc.9.x").plain == (deeper,)
    for i in range(20):  # the literal one is found however the cache stands
        assert literal in sublist.match(b"_INBOX.abc.7").plain
        assert literal not in sublist.match(b"_INBOX.abc.%d" % (100 + i)).plain
    sublist.remove(literal)
    assert sublist.match(b"_INBOX.abc.7").plain == (inbox,)


def test_prefix_results_follow_subscription_changes() -> None:
    inbox = Sub(b"_INBOX.abc.*")
    sublist = index_of(inbox)
    assert sublist.match(b"_INBOX.abc.1").plain == (inbox,)
    everything, star, queued = Sub(b"_INBOX.>"), Sub(b"*.abc.*"), Sub(b"_INBOX.abc.*", b"q")
    sublist.insert(everything)
    assert set(sublist.match(b"_INBOX.abc.2").plain) == {inbox, everything}
    sublist.insert(star)
    sublist.insert(queued)
    result = sublist.match(b"_INBOX.abc.3")
    assert set(result.plain) == {inbox, everything, star}
    assert groups_of(result) == {b"q": {queued}}
    sublist.remove(inbox)
    assert set(sublist.match(b"_INBOX.abc.4").plain) == {everything, star}
    for sub in (everything, star, queued):
        sublist.remove(sub)
    assert sublist.match(b"_INBOX.abc.5") is EMPTY
    sublist.insert(Sub(b"_INBOX.abc.6"))
    assert sublist.match(b"_INBOX.abc.7") is EMPTY


def test_small_cache_stays_correct_across_eviction() -> None:
    sublist: Sublist[Sub] = Sublist(cache_max=4)
    subs = [Sub(b"s.%d" % i) for i in range(20)]
    for sub in subs:
        sublist.insert(sub)
    for _ in range(3):
        for sub in subs:
            assert sublist.match(sub.subject).plain == (sub,)
            assert sublist.cache_count() <= 4
    with pytest.raises(ValueError):
        Sublist(cache_max=0)


# --- property-based: the index against a matcher that scans every subscription ---------------


def reference_regex(pattern: bytes) -> re.Pattern[bytes]:
    """A regular expression for the published subjects that ``pattern`` matches."""
    parts = []
    for token in pattern.split(b"."):
        if token == b"*":
            parts.append(rb"[^.]+")
        elif token == b">":
            parts.append(rb"[^.]+(?:\.[^.]+)*")
        else:
            parts.append(re.escape(token))
    return re.compile(rb"\.".join(parts))


SUB_TOKENS = st.sampled_from([b"a", b"b", b"*", b"a*"])
PUB_TOKENS = st.sampled_from([b"a", b"b", b"c", b"a*", b"*", b">"])
SUB_SUBJECTS = st.builds(
    lambda head, last: b".".join([*head, last]),
    st.lists(SUB_TOKENS, max_size=3),
    st.one_of(SUB_TOKENS, st.just(b">")),
)
PUB_SUBJECTS = st.lists(PUB_TOKENS, min_size=1, max_size=4).map(b".".join)
QUEUES = st.sampled_from([None, None, b"q1", b"q2"])
POOL_MAX = 12


class SublistAgainstReference(RuleBasedStateMachine):
    """Interleaved insert/remove/match over a pool of subscriptions, each match checked against
    a scan of every inserted one, then repeated as a cache hit."""

    @initialize(
        pool=st.lists(st.builds(Sub, SUB_SUBJECTS, QUEUES), min_size=1, max_size=POOL_MAX),
        cache_max=st.sampled_from([1, 3, 8, CACHE_MAX]),
    )
    def start(self, pool: list[Sub], cache_max: int) -> None:
        self.pool = pool
        self.cache_max = cache_max
        self.sublist: Sublist[Sub] = Sublist(cache_max=cache_max)
        self.inserted: dict[Sub, re.Pattern[bytes]] = {}

    @rule(i=st.integers(0, POOL_MAX - 1))
    def insert(self, i: int) -> None:
        sub = self.pool[i % len(self.pool)]
        self.sublist.insert(sub)
        self.inserted[sub] = reference_regex(sub.subject)

    @rule(i=st.integers(0, POOL_MAX - 1))
    def remove(self, i: int) -> None:
        sub = self.pool[i % len(self.pool)]
        assert self.sublist.remove(sub) is (self.inserted.pop(sub, None) is not None)

    @rule(subject=PUB_SUBJECTS)
    def match(self, subject: bytes) -> None:
        self.check_match(subject)

    @rule(
        i=st.integers(0, POOL_MAX - 1),
        fill=st.sampled_from([b"a", b"b", b"c"]),
        length_change=st.sampled_from([0, 0, 1, -1]),
    )
    def match_near_pool_subject(self, i: int, fill: bytes, length_change: int) -> None:
        """Publish a pool subject with its wildcards filled in, maybe a token longer or shorter,
        so that literal subscriptions and near misses get exercised."""
        pattern = self.pool[i % len(self.pool)].subject.split(b".")
        tokens = [fill if token in (b"*", b">") else token for token in pattern]
        if length_change > 0:
            tokens.append(fill)
        elif length_change < 0 and len(tokens) > 1:
            tokens.pop()
        self.check_match(b".".join(tokens))

    @rule(i=st.integers(0, POOL_MAX - 1), fresh=st.integers(0, 10**6))
    def match_fresh_last_token(self, i: int, fresh: int) -> None:
        """Publish a pool subject's prefix with a last token never seen (a reply subject)."""
        tokens = [b"a" if token in (b"*", b">") else token for token in self.pool[i % len(self.pool)].subject.split(b".")]
        tokens[-1] = b"r%d" % fresh
        self.check_match(b".".join(tokens))
        self.check_match(b".".join([*tokens[:-1], b"s%d" % fresh]))

    def check_match(self, subject: bytes) -> None:
        result = self.sublist.match(subject)
        matching = [sub for sub, regex in self.inserted.items() if regex.fullmatch(subject)]
        assert Counter(result.plain) == Counter(s for s in matching if s.queue is None)
        expected_groups: dict[bytes, Counter[Sub]] = {}
        for sub in matching:
            if sub.queue is not None:
                expected_groups.setdefault(sub.queue, Counter())[sub] += 1
        assert len(result.queues) == len(expected_groups)
        assert {g[0].queue: Counter(g) for g in result.queues} == expected_groups
        assert bool(result) is bool(matching)
        assert self.sublist.match(subject) is result  # a cache hit

    @invariant()
    def counts(self) -> None:
        assert len(self.sublist) == len(self.inserted)
        assert self.sublist.cache_count() <= self.cache_max
        assert self.sublist.prefix_count() <= self.cache_max
        if not self.inserted:
            assert self.sublist.node_count() == 0


SublistAgainstReference.TestCase.settings = settings(
    max_examples=300, stateful_step_count=50, deadline=None
)
test_sublist_against_reference = SublistAgainstReference.TestCase
