"""Key layout properties: replay order is byte order, mailbox prefixes are isolated."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mq9cluster.store import keys

addresses = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.", min_size=1, max_size=128)
messages = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 2**64 - 1)), max_size=200)


@given(messages)
def test_message_keys_sort_by_priority_descending_then_msg_id(pairs: list[tuple[int, int]]) -> None:
    tag = keys.tagged("box")
    by_key = sorted(pairs, key=lambda pair: keys.message_key(tag, *pair))
    assert by_key == sorted(pairs, key=lambda pair: (-pair[0], pair[1]))


@given(st.integers(0, 3), st.integers(1, 2**64 - 1))
def test_message_key_round_trips(priority: int, msg_id: int) -> None:
    key = keys.message_key(keys.tagged("box"), priority, msg_id)
    assert keys.parse_message_key(key) == (priority, msg_id)
    assert key.startswith(keys.level_prefix(keys.tagged("box"), priority))


@given(addresses, addresses)
def test_one_mailbox_prefix_never_covers_another(first: str, second: str) -> None:
    if first == second:
        return
    prefix = keys.messages_prefix(keys.tagged(first))
    key = keys.message_key(keys.tagged(second), 3, 1)
    assert not key.startswith(prefix)
    assert not prefix <= key < keys.end_of(prefix)


@given(addresses, addresses)
def test_tags_sort_like_addresses(first: str, second: str) -> None:
    assert (keys.tagged(first) < keys.tagged(second)) == (first < second)


def test_neighbour_addresses_are_isolated() -> None:
    prefix = keys.messages_prefix(keys.tagged("a"))
    for other in ("a.b", "a0", "ab", "a.", "b"):
        key = keys.message_key(keys.tagged(other), 0, 1)
        assert not prefix <= key < keys.end_of(prefix), other


@given(st.lists(st.tuples(st.integers(0, 2**63), addresses), max_size=50))
def test_expiry_keys_sort_by_time(entries: list[tuple[int, str]]) -> None:
    encoded = sorted(keys.expiry_key(at, keys.tagged(address)) for at, address in entries)
    assert [keys.parse_expiry_key(key)[0] for key in encoded] == sorted(at for at, _ in entries)


@given(st.integers(0, 2**62), st.integers(0, 2**62))
def test_expiry_bound_includes_exactly_the_due(expires_at: int, now_ms: int) -> None:
    key = keys.expiry_key(expires_at, keys.tagged("box"))
    assert (key < keys.expiry_bound(now_ms)) == (expires_at <= now_ms)


@pytest.mark.parametrize("address", ["", "A", "a b", "a\x00b", "é", "a" * 129, "a/b"])
def test_unstorable_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError):
        keys.tagged(address)


@pytest.mark.parametrize("priority", [-1, 4, 255])
def test_priorities_outside_0_to_3_are_refused(priority: int) -> None:
    with pytest.raises(ValueError):
        keys.message_key(keys.tagged("box"), priority, 1)


def test_prefixes_are_distinct_single_bytes() -> None:
    assert len(keys.PREFIX_NAMES) == len(set(keys.PREFIX_NAMES.values()))
    assert all(len(prefix) == 1 for prefix in keys.PREFIX_NAMES)


def test_end_of_is_the_first_key_past_the_prefix() -> None:
    assert keys.end_of(b"\x03a\x00") == b"\x03a\x01"
    assert keys.end_of(b"\x03\xff\xff") == b"\x04"
