"""The mq9 subject dialects: what a publish or a subscription on ``$mq9.AI.`` asks for.

Dialect 1 (primary): ``$mq9.AI.MAILBOX.CREATE``, ``$mq9.AI.MAILBOX.{addr}[.{priority}]``,
``$mq9.AI.PUBLIC.LIST``. Dialect 2 (the published RobustMQ SDK): ``$mq9.AI.MAILBOX.MSG.{addr}.{level}``,
``$mq9.AI.MAILBOX.LIST.{addr}``, ``$mq9.AI.MAILBOX.DELETE.{addr}.{msg_id}``. Dialect 3 (pull
consumption): ``$mq9.AI.MSG.{SEND,FETCH,ACK,QUERY}.{addr}``, ``$mq9.AI.MSG.DELETE.{addr}.{msg_id}``.
Addresses are lower
case, so the upper-case keywords never collide with one. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from mq9cluster.mailbox.names import PRIORITY_WORDS, SDK_LEVELS, address_problem
from mq9cluster.store import Priority

PREFIX = b"$mq9.AI."
MAILBOX = "$mq9.AI.MAILBOX."
CREATE = "$mq9.AI.MAILBOX.CREATE"
PUBLIC_LIST = "$mq9.AI.PUBLIC.LIST"
SDK_MSG = "$mq9.AI.MAILBOX.MSG."
SDK_LIST = "$mq9.AI.MAILBOX.LIST."
SDK_DELETE = "$mq9.AI.MAILBOX.DELETE."
MSG = "$mq9.AI.MSG."
MSG_VERBS = ("SEND", "FETCH", "ACK", "QUERY", "DELETE")
AGENT = "$mq9.AI.AGENT."
AGENT_VERBS = ("REGISTER", "UNREGISTER", "REPORT", "DISCOVER")
ALL_LEVELS = frozenset(int(p) for p in Priority)


@dataclass(frozen=True, slots=True)
class Create:
    """Create a mailbox (body: JSON options)."""


@dataclass(frozen=True, slots=True)
class Send:
    """Store a message in ``address`` at ``priority``."""

    address: str
    priority: int


@dataclass(frozen=True, slots=True)
class ListMessages:
    """SDK dialect: summaries of the stored messages."""

    address: str


@dataclass(frozen=True, slots=True)
class DeleteMessage:
    """SDK dialect: delete one message."""

    address: str
    msg_id: int


@dataclass(frozen=True, slots=True)
class PublicList:
    """List (request) or watch (subscription) the public mailboxes."""


@dataclass(frozen=True, slots=True)
class Invalid:
    """A ``$mq9.AI.`` subject that names no operation; ``error`` says why."""

    error: str


@dataclass(frozen=True, slots=True)
class MsgRequest:
    """Dialect 3: ``verb`` (SEND, FETCH, ACK, QUERY, DELETE) on ``address``; DELETE names ``msg_id``."""

    verb: str
    address: str
    msg_id: int = 0


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """Dialect 3: an agent registry operation (REGISTER, UNREGISTER, REPORT, DISCOVER)."""

    verb: str


Request = Create | Send | ListMessages | DeleteMessage | PublicList | MsgRequest | AgentRequest | Invalid


@dataclass(frozen=True, slots=True)
class Receive:
    """Subscribe to a mailbox: replay, then live. ``sdk`` selects the JSON-envelope delivery."""

    address: str
    levels: frozenset[int]
    sdk: bool


@dataclass(frozen=True, slots=True)
class Forbidden:
    """A subscription that could read other people's mail."""


Subscription = Receive | PublicList | Forbidden | Invalid


def _send_target(rest: str) -> Send | Invalid:
    head, _, last = rest.rpartition(".")
    if head and last in PRIORITY_WORDS:
        address, priority = head, PRIORITY_WORDS[last]
    else:
        address, priority = rest, Priority.NORMAL
    problem = address_problem(address)
    return Invalid(problem) if problem else Send(address, priority)


def _msg_request(rest: str) -> MsgRequest | Invalid:
    verb, _, target = rest.partition(".")
    if verb not in MSG_VERBS:
        return Invalid(f"unknown mq9 operation {verb!r}: use one of {', '.join(MSG_VERBS)}")
    msg_id = 0
    if verb == "DELETE":
        target, _, raw_id = target.rpartition(".")
        if not raw_id.isdigit():
            return Invalid(f"invalid msg_id {raw_id!r}")
        msg_id = int(raw_id)
    problem = address_problem(target)
    return Invalid(problem) if problem else MsgRequest(verb, target, msg_id)


def parse_request(subject: str) -> Request:
    """What a publish on ``subject`` (which starts with ``$mq9.AI.``) asks the broker to do."""
    if subject == CREATE:
        return Create()
    if subject == PUBLIC_LIST:
        return PublicList()
    if subject.startswith(SDK_MSG):
        address, _, level = subject[len(SDK_MSG):].rpartition(".")
        if level not in SDK_LEVELS:
            return Invalid(f"unknown priority {level!r}: use high, normal or low")
        problem = address_problem(address)
        return Invalid(problem) if problem else Send(address, SDK_LEVELS[level][-1])
    if subject.startswith(SDK_LIST):
        address = subject[len(SDK_LIST):]
        problem = address_problem(address)
        return Invalid(problem) if problem else ListMessages(address)
    if subject.startswith(SDK_DELETE):
        address, _, raw_id = subject[len(SDK_DELETE):].rpartition(".")
        if not raw_id.isdigit():
            return Invalid(f"invalid msg_id {raw_id!r}")
        problem = address_problem(address)
        return Invalid(problem) if problem else DeleteMessage(address, int(raw_id))
    if subject.startswith(AGENT):
        verb = subject[len(AGENT):]
        if verb not in AGENT_VERBS:
            return Invalid(f"unknown agent operation {verb!r}: use one of {', '.join(AGENT_VERBS)}")
        return AgentRequest(verb)
    if subject.startswith(MSG):
        return _msg_request(subject[len(MSG):])
    if subject.startswith(MAILBOX):
        return _send_target(subject[len(MAILBOX):])
    return Invalid(f"unknown mq9 subject {subject!r}")


def _wild(token: str) -> bool:
    return token in ("*", ">")


def parse_subscription(subject: str) -> Subscription:
    """What a subscription to ``subject`` (which starts with ``$mq9.``) receives."""
    tokens = subject.split(".")
    if subject == PUBLIC_LIST:
        return PublicList()
    sdk = subject.startswith(SDK_MSG)
    prefix = SDK_MSG if sdk else MAILBOX
    if not subject.startswith(prefix) or any(_wild(t) for t in tokens[:3]):
        return Forbidden() if any(_wild(t) for t in tokens) else Invalid(f"nothing is delivered on {subject!r}")
    address, _, last = subject[len(prefix):].rpartition(".")
    if not address and _wild(last):
        return Forbidden()
    if last == "*":
        levels = ALL_LEVELS
    elif sdk and last in SDK_LEVELS:
        levels = frozenset(SDK_LEVELS[last])
    elif not sdk and last in PRIORITY_WORDS:
        levels = frozenset({PRIORITY_WORDS[last]})
    elif not sdk and not _wild(last):
        address, levels = subject[len(prefix):], frozenset({int(Priority.NORMAL)})
    else:
        return Forbidden()
    if any(_wild(t) for t in address.split(".")):
        return Forbidden()
    if address in ("CREATE", "LIST", "DELETE", "MSG") or address.startswith(("LIST.", "DELETE.")):
        return Invalid(f"nothing is delivered on {subject!r}")
    problem = address_problem(address)
    return Invalid(problem) if problem else Receive(address, levels, sdk)
