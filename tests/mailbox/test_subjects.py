"""Subject dialects, address rules and op encoding: pure functions, tested with values alone."""

from __future__ import annotations

import pytest

from mq9cluster.mailbox import ops
from mq9cluster.mailbox.names import address_problem, new_private_address
from mq9cluster.mailbox.subjects import (
    ALL_LEVELS, Create, DeleteMessage, Forbidden, Invalid, ListMessages, PublicList, Receive, Send,
    parse_request, parse_subscription,
)
from mq9cluster.store import Priority

C, U, N, L = Priority.CRITICAL, Priority.URGENT, Priority.NORMAL, Priority.LOW


@pytest.mark.parametrize(("subject", "expected"), [
    ("$mq9.AI.MAILBOX.CREATE", Create()),
    ("$mq9.AI.PUBLIC.LIST", PublicList()),
    ("$mq9.AI.MAILBOX.agent1", Send("agent1", N)),
    ("$mq9.AI.MAILBOX.agent1.normal", Send("agent1", N)),
    ("$mq9.AI.MAILBOX.agent1.urgent", Send("agent1", U)),
    ("$mq9.AI.MAILBOX.agent1.high", Send("agent1", U)),
    ("$mq9.AI.MAILBOX.agent1.critical", Send("agent1", C)),
    ("$mq9.AI.MAILBOX.agent1.low", Send("agent1", L)),
    ("$mq9.AI.MAILBOX.team.alpha.inbox", Send("team.alpha.inbox", N)),
    ("$mq9.AI.MAILBOX.team.alpha.inbox.critical", Send("team.alpha.inbox", C)),
    ("$mq9.AI.MAILBOX.MSG.team.a.high", Send("team.a", U)),
    ("$mq9.AI.MAILBOX.MSG.team.a.normal", Send("team.a", N)),
    ("$mq9.AI.MAILBOX.MSG.team.a.low", Send("team.a", L)),
    ("$mq9.AI.MAILBOX.LIST.team.a", ListMessages("team.a")),
    ("$mq9.AI.MAILBOX.DELETE.team.a.42", DeleteMessage("team.a", 42)),
])
def test_requests(subject, expected):
    assert parse_request(subject) == expected


@pytest.mark.parametrize("subject", [
    "$mq9.AI.MAILBOX.Agent", "$mq9.AI.MAILBOX.a..b", "$mq9.AI.MAILBOX.MSG.a.critical",
    "$mq9.AI.MAILBOX.DELETE.a.x", "$mq9.AI.MAILBOX.LIST.A", "$mq9.AI.OTHER", "$mq9.AI.MAILBOX.normal",
])
def test_invalid_requests_say_why(subject):
    result = parse_request(subject)
    assert isinstance(result, Invalid) and result.error


@pytest.mark.parametrize(("subject", "expected"), [
    ("$mq9.AI.MAILBOX.a.b.*", Receive("a.b", ALL_LEVELS, False)),
    ("$mq9.AI.MAILBOX.a.b.critical", Receive("a.b", frozenset({C}), False)),
    ("$mq9.AI.MAILBOX.a.b.high", Receive("a.b", frozenset({U}), False)),
    ("$mq9.AI.MAILBOX.a.b", Receive("a.b", frozenset({N}), False)),
    ("$mq9.AI.MAILBOX.MSG.a.b.*", Receive("a.b", ALL_LEVELS, True)),
    ("$mq9.AI.MAILBOX.MSG.a.b.high", Receive("a.b", frozenset({C, U}), True)),
    ("$mq9.AI.PUBLIC.LIST", PublicList()),
])
def test_subscriptions(subject, expected):
    assert parse_subscription(subject) == expected


@pytest.mark.parametrize("subject", [
    "$mq9.AI.MAILBOX.>", "$mq9.AI.>", "$mq9.>", "$mq9.AI.MAILBOX.*.*", "$mq9.AI.MAILBOX.*",
    "$mq9.AI.MAILBOX.a.>", "$mq9.AI.MAILBOX.*.normal", "$mq9.AI.MAILBOX.MSG.*.*", "$mq9.*.MAILBOX.a.*",
    "$mq9.AI.MAILBOX.MSG.>",
])
def test_forbidden_wildcards(subject):
    assert parse_subscription(subject) == Forbidden()


@pytest.mark.parametrize("address", ["a", "agent.one", "x" * 128, "a1.b2.c3", "normally", "lowkey.x"])
def test_valid_addresses(address):
    assert address_problem(address) is None


@pytest.mark.parametrize("address", [
    "", "x" * 129, "Agent", "a..b", ".a", "a.", "a-b", "a b", "a.normal", "a.low", "a.urgent", "a.high",
    "a.critical", "normal", "a/b", "é",
])
def test_invalid_addresses(address):
    assert address_problem(address)


def test_private_addresses_are_unguessable_and_valid():
    seen = {new_private_address() for _ in range(1000)}
    assert len(seen) == 1000
    for address in seen:
        assert address_problem(address) is None
        assert len(address) == 26  # 26 base32 characters = 130 bits from the CSPRNG


@pytest.mark.parametrize("op", [
    ops.CreateOp("a.b", 1700000000000, 60, True, "desc é"),
    ops.AppendOp("a", 3, 1, b"\x00\xffpayload", None),
    ops.AppendOp("a", 0, 1, b"", b"NATS/1.0\r\nX: y\r\n\r\n"),
    ops.DeleteMessageOp("a", 7),
    ops.ExpireOp("a", 99),
    ops.GroupProgressOp("a", "workers", {3: 10, 1: 4}),
    ops.ClaimOp("a", "workers", [1, 3], 64),
])
def test_ops_round_trip(op):
    assert ops.decode(ops.encode(op)) == op


def test_unknown_opcode_is_refused():
    with pytest.raises(ValueError, match="unknown mailbox op"):
        ops.decode(b"\x91\x63")  # msgpack [99]
