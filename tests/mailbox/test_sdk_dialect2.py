"""Dialect 2: the published RobustMQ SDK (`robustmq` 1.0.0) and `langchain-mq9` 0.3.5, unmodified,
against a real mq9cluster process.

The SDK is async (nats-py underneath): each test drives it with `asyncio.run` under an overall
deadline. The langchain tools are sync (`tool.invoke` runs `asyncio.run` itself), so those tests call
them from plain sync code. What the clients send and parse is summarised, with file:line references,
in tests/mailbox/sdk_notes.md.

Waiting rules: every wait is bounded (WAIT for something that must happen, QUIET for proving that
nothing more arrives). Before asserting the replay order of a backlog the test waits until LIST shows
every message, because SDK sends are fire-and-forget publishes and a subscription that raced ahead of
the commits would legitimately see them as live arrivals instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
import pytest
from langchain_mq9 import Mq9Toolkit
from robustmq.mq9 import Client, Mailbox, Message, MessageMeta, Priority
from robustmq.mq9.client import Mq9Error

from tests.support.broker import Broker

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

T = TypeVar("T")

BODY_TIMEOUT = 45.0  # whole async body of one test
REQUEST_TIMEOUT = 3.0  # SDK request/reply timeout (its default is 5 s)
WAIT = 5.0  # for something that must happen
QUIET = 1.0  # to show that nothing (more) arrives
SETTLE = 0.5  # after the expected deliveries: a duplicate or extra one would show up within this

PRIORITY_WORDS = ("low", "normal", "urgent", "high", "critical")
ADDRESS = re.compile(r"^[a-z0-9](?:[a-z0-9.]{0,126}[a-z0-9])?$")
MSG = "$mq9.AI.MAILBOX.MSG.{}.{}"  # Dialect 2 delivery / send subject


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def broker(mq9) -> Broker:
    """One mq9cluster node with a fresh data dir."""
    return mq9()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run an async test body to completion under BODY_TIMEOUT (never hangs)."""
    return asyncio.run(asyncio.wait_for(coro, BODY_TIMEOUT))


def sdk(broker: Broker) -> Client:
    """An unmodified SDK client; only the public knobs for timeouts/reconnects are tightened."""
    return Client(broker.url, request_timeout=REQUEST_TIMEOUT, max_reconnect_attempts=2, reconnect_time_wait=0.2)


def unique_name(tag: str) -> str:
    """A valid public mailbox name nobody else uses."""
    return f"sdk.{tag}.{uuid.uuid4().hex[:12]}"


def assert_valid_address(address: str) -> None:
    assert isinstance(address, str), f"mail_id is {type(address).__name__}: {address!r}"
    assert ADDRESS.match(address) and ".." not in address, f"not a valid mail address: {address!r}"
    assert address.rsplit(".", 1)[-1] not in PRIORITY_WORDS, f"address ends in a priority word: {address!r}"


def assert_msg_id(msg_id: Any) -> None:
    assert isinstance(msg_id, int) and not isinstance(msg_id, bool), f"msg_id must be an integer, got {msg_id!r}"


def plausible_ts(ts: Any, t0: float, t1: float) -> bool:
    """`ts` is an integer timestamp of [t0, t1] (wall clock), in unix ms or unix s (the dialect does not say)."""
    if not isinstance(ts, int) or isinstance(ts, bool):
        return False
    slack = 5.0
    return (t0 - slack) * 1000 <= ts <= (t1 + slack) * 1000 or t0 - slack <= ts <= t1 + slack


def assert_broker_error(err: BaseException) -> None:
    """`err` is an Mq9Error made from the broker's `{"error": "..."}` reply, not a transport failure."""
    assert isinstance(err, Mq9Error), repr(err)
    text = str(err)
    assert text, "the error reply must carry a non-empty message"
    assert not text.startswith(("No responders for subject", "Request timed out")), f"no error reply: {text}"


class Inbox:
    """An SDK subscription callback that records every Message it is handed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, msg: Message) -> None:
        self.messages.append(msg)

    async def wait_for(self, n: int, what: str, timeout: float = WAIT) -> list[Message]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n:
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: expected {n} deliveries within {timeout} s, got {describe(self.messages)}")
            await asyncio.sleep(0.01)
        await asyncio.sleep(SETTLE)
        return list(self.messages)


def describe(messages: list[Message]) -> list[tuple]:
    return [(m.priority.value, m.msg_id, m.payload[:40]) for m in messages]


async def receive(client: Client, mail_id: str, n: int, what: str, **options: Any) -> list[Message]:
    """Subscribe through the SDK, wait for `n` deliveries (plus SETTLE), unsubscribe; all deliveries."""
    inbox = Inbox()
    sub = await client.subscribe(mail_id, inbox, **options)
    try:
        return await inbox.wait_for(n, what)
    finally:
        await sub.unsubscribe()


async def receive_nothing(client: Client, mail_id: str, what: str, **options: Any) -> None:
    inbox = Inbox()
    sub = await client.subscribe(mail_id, inbox, **options)
    await asyncio.sleep(QUIET)
    await sub.unsubscribe()
    assert inbox.messages == [], f"{what}: expected no delivery, got {describe(inbox.messages)}"


async def wait_listed(client: Client, mail_id: str, n: int) -> list[MessageMeta]:
    """Poll the SDK's list() until it shows exactly `n` messages (i.e. the sends are committed)."""
    deadline = time.monotonic() + WAIT
    while True:
        metas = await client.list(mail_id)
        if len(metas) == n:
            return metas
        if time.monotonic() > deadline:
            pytest.fail(f"list({mail_id}) never showed {n} messages; last: {metas}")
        await asyncio.sleep(0.05)


async def nats_connect(broker: Broker) -> nats.NATS:
    return await nats.connect(broker.url, connect_timeout=2, max_reconnect_attempts=2, reconnect_time_wait=0.2)


async def raw_request(nc: nats.NATS, subject: str, body: bytes) -> dict:
    """A request as the SDK makes it, decoded the way the SDK decodes it (must be a JSON object)."""
    reply = await nc.request(subject, body, timeout=REQUEST_TIMEOUT)
    decoded = json.loads(reply.data)
    assert isinstance(decoded, dict), f"reply on {subject} is not a JSON object: {reply.data!r}"
    return decoded


# ----------------------------------------------------------------------------------------------
# SDK: create
# ----------------------------------------------------------------------------------------------


def test_create_private_mailbox_returns_usable_mail_id(broker):
    async def body():
        async with sdk(broker) as c:
            a = await c.create(ttl=600)
            b = await c.create(ttl=600)
            await c.send(a.mail_id, b"ping")
            got = await receive(c, a.mail_id, 1, "private mailbox round trip")
            return a, b, got

    a, b, got = run(body())
    for mailbox in (a, b):
        assert isinstance(mailbox, Mailbox) and mailbox.public is False
        assert_valid_address(mailbox.mail_id)
        assert len(mailbox.mail_id) >= 25, f"private address too short to carry 128 random bits: {mailbox.mail_id!r}"
    assert a.mail_id != b.mail_id
    assert [(m.mail_id, m.priority, m.payload) for m in got] == [(a.mail_id, Priority.NORMAL, b"ping")]


def test_create_public_mailbox_is_idempotent(broker):
    name = unique_name("pub")

    async def body():
        async with sdk(broker) as c:
            first = await c.create(ttl=600, public=True, name=name, desc="first")
            await c.send(name, b"kept across re-create")
            await wait_listed(c, name, 1)
            again = await c.create(ttl=600, public=True, name=name, desc="first")
            other_args = await c.create(ttl=30, public=True, name=name)  # a start-up with other settings
            got = await receive(c, name, 1, "public mailbox after re-create")
            return first, again, other_args, got

    first, again, other_args, got = run(body())
    assert first.mail_id == again.mail_id == other_args.mail_id == name
    assert [m.payload for m in got] == [b"kept across re-create"], "re-creating a public mailbox must not reset it"


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"public": True, "name": "Upper.Case"}, id="uppercase"),
        pytest.param({"public": True, "name": "under_score"}, id="underscore"),
        pytest.param({"public": True, "name": "has space"}, id="space"),
        pytest.param({"public": True, "name": "a..b"}, id="double-dot"),
        pytest.param({"public": True, "name": ".lead"}, id="leading-dot"),
        pytest.param({"public": True, "name": "trail."}, id="trailing-dot"),
        pytest.param({"public": True, "name": "x" * 129}, id="129-chars"),
        pytest.param({"public": True, "name": "inbox.low"}, id="ends-low"),
        pytest.param({"public": True, "name": "inbox.normal"}, id="ends-normal"),
        pytest.param({"public": True, "name": "inbox.high"}, id="ends-high"),
        pytest.param({"public": True, "name": "inbox.urgent"}, id="ends-urgent"),
        pytest.param({"public": True, "name": "inbox.critical"}, id="ends-critical"),
        pytest.param({"public": True, "name": "wild.*"}, id="wildcard"),
        pytest.param({}, id="negative-ttl"),
    ],
)
def test_create_with_bad_input_raises(broker, kwargs):
    ttl = -1 if not kwargs else 600

    async def body():
        async with sdk(broker) as c:
            with pytest.raises(Mq9Error) as err:
                await c.create(ttl=ttl, **kwargs)
            good = await c.create(ttl=600)  # the connection and the broker are fine afterwards
            return err.value, good

    err, good = run(body())
    assert_broker_error(err)
    assert_valid_address(good.mail_id)


def test_public_create_without_name_is_refused_by_the_sdk_itself(broker):
    async def body():
        async with sdk(broker) as c:
            with pytest.raises(ValueError, match="name is required"):
                await c.create(ttl=600, public=True)

    run(body())


# ----------------------------------------------------------------------------------------------
# SDK: send / subscribe
# ----------------------------------------------------------------------------------------------


def test_backlog_is_delivered_high_normal_low_fifo_within_a_level(broker):
    sends = [
        ("low", b"low-1"),
        ("normal", b"normal-1"),
        (Priority.HIGH, b"high-1"),
        ("low", b"low-2"),
        ("high", b"high-2"),
        (Priority.NORMAL, b"normal-2"),
        ("high", b"high-3"),
    ]

    async def body():
        async with sdk(broker) as sender, sdk(broker) as receiver:
            mail_id = (await sender.create(ttl=600)).mail_id
            for priority, payload in sends:
                await sender.send(mail_id, payload, priority=priority)
            await wait_listed(sender, mail_id, len(sends))
            return mail_id, await receive(receiver, mail_id, len(sends), "backlog replay")

    mail_id, got = run(body())
    expected = [b"high-1", b"high-2", b"high-3", b"normal-1", b"normal-2", b"low-1", b"low-2"]
    assert [m.payload for m in got] == expected, describe(got)
    assert [m.priority.value for m in got] == ["high"] * 3 + ["normal"] * 2 + ["low"] * 2
    assert all(m.mail_id == mail_id for m in got)
    for m in got:
        assert_msg_id(m.msg_id)
    assert len({m.msg_id for m in got}) == len(got), "msg_ids must be unique"
    for level in ("high", "normal", "low"):
        ids = [m.msg_id for m in got if m.priority.value == level]
        assert ids == sorted(ids), f"msg_ids of {level} are not increasing in send order: {ids}"


def test_payload_bytes_arrive_exactly(broker):
    payloads: list[Any] = [
        b"\x00\xff\xfe\x80 not utf-8 \xc3\x28",
        bytes(range(256)),
        b'{"msg_id": 1, "payload": "eA==", "priority": "low", "ts": 1}',  # looks like an envelope
        b"\r\nMSG x 1 2\r\n+OK\r\nPING\r\n",
        "h\u00e9llo \u2713 \u4f60\u597d",  # str: the SDK sends UTF-8
        {"task": "summarize", "doc": "abc", "n": [1, 2]},  # dict: the SDK sends json.dumps
        bytes((i * 7) % 256 for i in range(64 * 1024)),
    ]
    expected = [p if isinstance(p, bytes) else p.encode() if isinstance(p, str) else json.dumps(p).encode()
                for p in payloads]

    async def body():
        async with sdk(broker) as c:
            mail_id = (await c.create(ttl=600)).mail_id
            for p in payloads:
                await c.send(mail_id, p)
            await wait_listed(c, mail_id, len(payloads))
            return await receive(c, mail_id, len(payloads), "payload round trip")

    got = run(body())
    assert len(got) == len(expected)
    for i, (m, want) in enumerate(zip(got, expected)):
        assert m.payload == want, f"payload {i} altered: sent {want[:60]!r}..., got {m.payload[:60]!r}..."


def test_live_messages_follow_the_backlog_without_gap_or_duplicate(broker):
    async def body():
        async with sdk(broker) as sender, sdk(broker) as receiver:
            mail_id = (await sender.create(ttl=600)).mail_id
            await sender.send(mail_id, b"old-low", priority="low")
            await sender.send(mail_id, b"old-high", priority="high")
            await wait_listed(sender, mail_id, 2)
            inbox = Inbox()
            sub = await receiver.subscribe(mail_id, inbox)
            await inbox.wait_for(2, "backlog before live")
            for priority, payload in [("low", b"new-low"), ("normal", b"new-normal"), ("high", b"new-high")]:
                await sender.send(mail_id, payload, priority=priority)
            got = await inbox.wait_for(5, "backlog + live")
            await sub.unsubscribe()
            return got

    got = run(body())
    assert [m.payload for m in got[:2]] == [b"old-high", b"old-low"]
    assert sorted(m.payload for m in got[2:]) == [b"new-high", b"new-low", b"new-normal"]
    assert len(got) == 5 and len({m.msg_id for m in got}) == 5, describe(got)
    by_payload = {m.payload: m.priority.value for m in got}
    assert by_payload == {b"old-high": "high", b"old-low": "low", b"new-low": "low", b"new-normal": "normal",
                          b"new-high": "high"}


def test_messages_stay_stored_after_delivery(broker):
    async def body():
        async with sdk(broker) as c:
            mail_id = (await c.create(ttl=600)).mail_id
            await c.send(mail_id, b"one")
            await c.send(mail_id, b"two", priority="low")
            await wait_listed(c, mail_id, 2)
            first = await receive(c, mail_id, 2, "first reading")
        async with sdk(broker) as c:
            second = await receive(c, mail_id, 2, "second reading, new connection")
        return first, second

    first, second = run(body())
    assert [(m.msg_id, m.payload) for m in first] == [(m.msg_id, m.payload) for m in second]
    assert [m.payload for m in first] == [b"one", b"two"]


def test_subscribe_to_one_priority(broker):
    async def body():
        async with sdk(broker) as c:
            mail_id = (await c.create(ttl=600)).mail_id
            for priority, payload in [("high", b"h1"), ("normal", b"n1"), ("low", b"l1"), ("high", b"h2")]:
                await c.send(mail_id, payload, priority=priority)
            await wait_listed(c, mail_id, 4)
            high = await receive(c, mail_id, 2, "high only", priority="high")
            low = await receive(c, mail_id, 1, "low only", priority=Priority.LOW)
            return high, low

    high, low = run(body())
    assert [(m.priority.value, m.payload) for m in high] == [("high", b"h1"), ("high", b"h2")]
    assert [(m.priority.value, m.payload) for m in low] == [("low", b"l1")]


def test_messages_survive_a_broker_restart(broker):
    async def before():
        async with sdk(broker) as c:
            mail_id = (await c.create(ttl=600)).mail_id
            await c.send(mail_id, b"survivor-low", priority="low")
            await c.send(mail_id, b"survivor-high", priority="high")
            await wait_listed(c, mail_id, 2)
            return mail_id

    async def after(mail_id):
        async with sdk(broker) as c:
            got = await receive(c, mail_id, 2, "after restart")
            await c.send(mail_id, b"newcomer")
            await wait_listed(c, mail_id, 3)
            everything = await receive(c, mail_id, 3, "after restart, with a new message")
            return got, everything

    mail_id = run(before())
    broker.restart()
    got, everything = run(after(mail_id))
    assert [m.payload for m in got] == [b"survivor-high", b"survivor-low"]
    newcomer = next(m for m in everything if m.payload == b"newcomer")
    assert newcomer.msg_id not in {m.msg_id for m in got}, "a msg_id was reused after restart"
    assert all(newcomer.msg_id > m.msg_id for m in got), "msg_ids must keep increasing across a restart"


# ----------------------------------------------------------------------------------------------
# SDK: list / delete
# ----------------------------------------------------------------------------------------------


def test_list_returns_message_metadata(broker):
    async def body():
        async with sdk(broker) as c:
            mail_id = (await c.create(ttl=600)).mail_id
            empty = await c.list(mail_id)
            t0 = time.time()
            for priority in ("low", "high", "normal"):
                await c.send(mail_id, f"body-{priority}".encode(), priority=priority)
            metas = await wait_listed(c, mail_id, 3)
            t1 = time.time()
            again = await c.list(mail_id)
            delivered = await receive(c, mail_id, 3, "subscribe after list")
            return empty, metas, again, delivered, t0, t1

    empty, metas, again, delivered, t0, t1 = run(body())
    assert empty == []
    assert all(isinstance(m, MessageMeta) for m in metas)
    assert sorted(m.priority.value for m in metas) == ["high", "low", "normal"]
    for m in metas:
        assert_msg_id(m.msg_id)
        assert plausible_ts(m.ts, t0, t1), f"ts {m.ts!r} is not a timestamp of the send (unix ms or s)"
    assert again == metas, "list must be a non-destructive snapshot"
    assert {m.msg_id: m.priority for m in metas} == {m.msg_id: m.priority for m in delivered}, \
        "list and subscribe disagree on msg_id/priority"


def test_delete_removes_exactly_one_message(broker):
    async def body():
        async with sdk(broker) as c:
            mail_id = (await c.create(ttl=600)).mail_id
            for payload in (b"a", b"b", b"c"):
                await c.send(mail_id, payload)
            await wait_listed(c, mail_id, 3)
            got = await receive(c, mail_id, 3, "before delete")
            victim = got[1]
            await c.delete(mail_id, victim.msg_id)
            listed = await c.list(mail_id)
            remaining = await receive(c, mail_id, 2, "after delete")
            return victim, listed, remaining

    victim, listed, remaining = run(body())
    assert victim.payload == b"b"
    assert victim.msg_id not in [m.msg_id for m in listed]
    assert len(listed) == 2
    assert [m.payload for m in remaining] == [b"a", b"c"], describe(remaining)


def test_consume_and_delete_inside_the_callback(broker):
    """The README's pattern: the handler deletes each message it processed, via the same client."""

    async def body():
        async with sdk(broker) as c:
            mail_id = (await c.create(ttl=600)).mail_id
            for priority in ("low", "normal", "high"):
                await c.send(mail_id, priority.encode(), priority=priority)
            await wait_listed(c, mail_id, 3)
            processed: list[bytes] = []

            async def handler(msg: Message) -> None:
                await c.delete(msg.mail_id, msg.msg_id)
                processed.append(msg.payload)

            sub = await c.subscribe(mail_id, handler)
            deadline = time.monotonic() + WAIT
            while len(processed) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await sub.unsubscribe()
            left = await c.list(mail_id)
            await receive_nothing(c, mail_id, "after consume-and-delete")
            return processed, left

    processed, left = run(body())
    assert processed == [b"high", b"normal", b"low"]
    assert left == []


# ----------------------------------------------------------------------------------------------
# SDK: queue groups
# ----------------------------------------------------------------------------------------------


def test_queue_group_members_share_the_messages(broker):
    n = 20

    async def body():
        async with sdk(broker) as w1, sdk(broker) as w2, sdk(broker) as watcher, sdk(broker) as sender:
            mail_id = (await sender.create(ttl=600)).mail_id
            workers = [Inbox(), Inbox()]
            subs = [await w.subscribe(mail_id, inbox, queue_group="workers") for w, inbox in zip((w1, w2), workers)]
            everyone = Inbox()
            subs.append(await watcher.subscribe(mail_id, everyone))
            await asyncio.sleep(0.2)
            for i in range(n):
                await sender.send(mail_id, str(i).encode())
            await everyone.wait_for(n, "plain subscriber")
            deadline = time.monotonic() + WAIT
            while sum(len(w.messages) for w in workers) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(SETTLE)
            for sub in subs:
                await sub.unsubscribe()
            return workers, everyone

    workers, everyone = run(body())
    shared = sorted(int(m.payload) for w in workers for m in w.messages)
    assert shared == list(range(n)), f"each message must reach exactly one group member: {shared}"
    assert [int(m.payload) for m in everyone.messages] == list(range(n)), "a plain subscriber sees everything"


def test_queue_group_starts_at_the_oldest_message_and_resumes_after_the_last_given(broker):
    async def body():
        async with sdk(broker) as sender:
            mail_id = (await sender.create(ttl=600)).mail_id
            await sender.send(mail_id, b"a1")
            await sender.send(mail_id, b"a2", priority="high")
            await wait_listed(sender, mail_id, 2)
            async with sdk(broker) as member:
                first = await receive(member, mail_id, 2, "group g, first member", queue_group="g")
            await sender.send(mail_id, b"b1")
            await wait_listed(sender, mail_id, 3)
            async with sdk(broker) as member:
                resumed = await receive(member, mail_id, 1, "group g, later member", queue_group="g")
            async with sdk(broker) as member:
                other_group = await receive(member, mail_id, 3, "group h, first member", queue_group="h")
            return first, resumed, other_group

    first, resumed, other_group = run(body())
    assert [m.payload for m in first] == [b"a2", b"a1"]
    assert [m.payload for m in resumed] == [b"b1"], "a resubscribing group must not get its backlog again"
    assert [m.payload for m in other_group] == [b"a2", b"a1", b"b1"]


# ----------------------------------------------------------------------------------------------
# SDK: missing mailboxes, errors, TTL
# ----------------------------------------------------------------------------------------------


def test_send_to_a_missing_mailbox_is_fire_and_forget_and_stores_nothing(broker):
    name = unique_name("ghost")

    async def body():
        async with sdk(broker) as c:
            await c.send(name, b"into the void")  # the SDK publishes: no reply, no exception
            await c.send(name, b"again", priority="high")
            created = await c.create(ttl=600, public=True, name=name)  # the connection is still fine
            await receive_nothing(c, name, "messages sent before the mailbox existed")
            return created, await c.list(name)

    created, listed = run(body())
    assert created.mail_id == name
    assert listed == []


def test_requests_about_a_missing_mailbox_fail(broker):
    name = unique_name("ghost")

    async def body():
        async with sdk(broker) as c:
            with pytest.raises(Mq9Error) as listing:
                await c.list(name)
            with pytest.raises(Mq9Error) as deleting:
                await c.delete(name, 1)
            return listing.value, deleting.value

    listing, deleting = run(body())
    assert_broker_error(listing)
    assert_broker_error(deleting)


def test_subscription_made_before_the_mailbox_exists_gets_only_later_messages(broker):
    name = unique_name("early")

    async def body():
        async with sdk(broker) as listener, sdk(broker) as c:
            inbox = Inbox()
            sub = await listener.subscribe(name, inbox)
            await c.send(name, b"too early")
            await asyncio.sleep(QUIET)
            before = list(inbox.messages)
            await c.create(ttl=600, public=True, name=name)
            await c.send(name, b"after create")
            got = await inbox.wait_for(1, "subscription made before create")
            await sub.unsubscribe()
            return before, got

    before, got = run(body())
    assert before == []
    assert [m.payload for m in got] == [b"after create"]


def test_mailbox_expires_after_its_ttl(broker):
    async def body():
        async with sdk(broker) as c:
            mail_id = (await c.create(ttl=2)).mail_id
            await c.send(mail_id, b"short-lived")
            await wait_listed(c, mail_id, 1)
            deadline = time.monotonic() + 15
            while True:
                try:
                    await c.list(mail_id)
                except Mq9Error as err:
                    gone = err
                    break
                assert time.monotonic() < deadline, "mailbox with ttl=2 still listed after 15 s"
                await asyncio.sleep(0.2)
            await receive_nothing(c, mail_id, "expired mailbox")
            return gone

    assert_broker_error(run(body()))


# ----------------------------------------------------------------------------------------------
# the same mailbox through Dialect 1 and through the SDK
# ----------------------------------------------------------------------------------------------


def test_dialect1_sends_reach_sdk_subscribers_with_critical_as_high(broker):
    async def body():
        nc = await nats_connect(broker)
        try:
            async with sdk(broker) as c:
                mail_id = (await c.create(ttl=600)).mail_id
                ids = {}
                for suffix, payload in [(".low", b"d1-low"), ("", b"d1-normal"), (".urgent", b"d1-urgent"),
                                        (".critical", b"d1-critical")]:
                    reply = await raw_request(nc, f"$mq9.AI.MAILBOX.{mail_id}{suffix}", payload)
                    assert "error" not in reply and "msg_id" in reply, reply
                    ids[payload] = reply["msg_id"]
                await c.send(mail_id, b"d2-high", priority="high")
                metas = await wait_listed(c, mail_id, 5)
                got = await receive(c, mail_id, 5, "mixed-dialect backlog")
                return ids, metas, got
        finally:
            await nc.close()

    ids, metas, got = run(body())
    assert [(m.priority.value, m.payload) for m in got] == [
        ("high", b"d1-critical"), ("high", b"d1-urgent"), ("high", b"d2-high"), ("normal", b"d1-normal"),
        ("low", b"d1-low"),
    ]
    for m in got:
        if m.payload in ids:
            assert m.msg_id == ids[m.payload], "the envelope msg_id differs from the Dialect 1 send reply"
    assert sorted(m.priority.value for m in metas) == ["high", "high", "high", "low", "normal"]


# ----------------------------------------------------------------------------------------------
# the bytes on the wire, exactly as the SDK sends and parses them
# ----------------------------------------------------------------------------------------------


def test_wire_format_of_replies_and_deliveries(broker):
    async def body():
        nc = await nats_connect(broker)
        try:
            created = await raw_request(nc, "$mq9.AI.MAILBOX.CREATE", json.dumps({"ttl": 600}).encode())
            mail_id = created.get("mail_id")
            bad = await raw_request(nc, "$mq9.AI.MAILBOX.CREATE",
                                    json.dumps({"ttl": 600, "public": True, "name": "Bad Name"}).encode())
            t0 = time.time()
            await nc.publish(MSG.format(mail_id, "low"), b"\xff\x00\x01")
            await nc.publish(MSG.format(mail_id, "high"), b"")
            await nc.publish(MSG.format(mail_id, "normal"), b"n")
            deadline = time.monotonic() + WAIT
            while True:
                listed = await raw_request(nc, f"$mq9.AI.MAILBOX.LIST.{mail_id}", b"{}")
                if len(listed.get("messages", [])) == 3 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            t1 = time.time()
            deliveries: list = []

            async def cb(msg):
                deliveries.append(msg)

            sub = await nc.subscribe(MSG.format(mail_id, "*"), cb=cb)
            deadline = time.monotonic() + WAIT
            while len(deliveries) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(SETTLE)
            await sub.unsubscribe()
            target = json.loads(deliveries[1].data)["msg_id"] if len(deliveries) == 3 else 0
            deleted = await raw_request(nc, f"$mq9.AI.MAILBOX.DELETE.{mail_id}.{target}", b"{}")
            return created, bad, listed, deliveries, deleted, t0, t1
        finally:
            await nc.close()

    created, bad, listed, deliveries, deleted, t0, t1 = run(body())
    assert "error" not in created, f"a success reply must not contain an error key: {created}"
    assert_valid_address(created["mail_id"])
    assert isinstance(bad.get("error"), str) and bad["error"], f"bad create must reply a non-empty error: {bad}"

    assert "error" not in listed, listed
    assert isinstance(listed.get("messages"), list) and len(listed["messages"]) == 3, listed
    for item in listed["messages"]:
        assert {"msg_id", "priority", "ts"} <= item.keys(), item
        assert item["priority"] in ("high", "normal", "low"), item

    mail_id = created["mail_id"]
    assert len(deliveries) == 3, [(d.subject, d.data) for d in deliveries]
    envelopes = [json.loads(d.data) for d in deliveries]
    assert [d.subject for d in deliveries] == [MSG.format(mail_id, p) for p in ("high", "normal", "low")]
    for d, env in zip(deliveries, envelopes):
        assert isinstance(env, dict) and set(env) == {"msg_id", "payload", "priority", "ts"}, env
        assert env["priority"] == d.subject.rsplit(".", 1)[-1]
        assert_msg_id(env["msg_id"])
        assert plausible_ts(env["ts"], t0, t1), env
    assert [env["payload"] for env in envelopes] == ["", base64.b64encode(b"n").decode(),
                                                     base64.b64encode(b"\xff\x00\x01").decode()]
    assert {(e["msg_id"], e["priority"], e["ts"]) for e in envelopes} == \
        {(i["msg_id"], i["priority"], i["ts"]) for i in listed["messages"]}, "list and envelopes disagree"

    assert deleted == {"deleted": True}, deleted


# ----------------------------------------------------------------------------------------------
# langchain-mq9 tools, called directly (no LLM)
# ----------------------------------------------------------------------------------------------


def lc_tools(broker: Broker) -> dict:
    tools = {tool.name: tool for tool in Mq9Toolkit(server=broker.url).get_tools()}
    assert set(tools) == {"create_mailbox", "create_public_mailbox", "send_message", "get_messages",
                          "list_messages", "delete_message"}
    return tools


LIST_HEADER = re.compile(r"^(\d+) message\(s\) in mailbox '([^']*)':$")
LIST_LINE = re.compile(r"^  msg_id=(\S+)  priority=(high|normal|low)  ts=(\d+)$")


def lc_list(tools: dict, mail_id: str) -> list[tuple[str, str, int]]:
    """list_messages output parsed into (msg_id, priority, ts)."""
    out = tools["list_messages"].invoke({"mail_id": mail_id})
    assert isinstance(out, str)
    if out == f"No messages in mailbox '{mail_id}'.":
        return []
    header, *lines = out.split("\n")
    match = LIST_HEADER.match(header)
    assert match and match.group(2) == mail_id and int(match.group(1)) == len(lines), out
    parsed = [LIST_LINE.match(line) for line in lines]
    assert all(parsed), out
    return [(p.group(1), p.group(2), int(p.group(3))) for p in parsed]


def lc_wait_listed(tools: dict, mail_id: str, n: int) -> list[tuple[str, str, int]]:
    deadline = time.monotonic() + WAIT
    while True:
        listed = lc_list(tools, mail_id)
        if len(listed) == n:
            return listed
        assert time.monotonic() < deadline, f"list_messages never showed {n} messages: {listed}"
        time.sleep(0.05)


def test_langchain_create_mailbox(broker):
    tools = lc_tools(broker)
    first = tools["create_mailbox"].invoke({"ttl": 600})
    default_ttl = tools["create_mailbox"].invoke({})
    assert isinstance(first, str) and isinstance(default_ttl, str)
    assert_valid_address(first)
    assert_valid_address(default_ttl)
    assert first != default_ttl


def test_langchain_create_public_mailbox_is_idempotent(broker):
    tools = lc_tools(broker)
    name = unique_name("lc")
    first = tools["create_public_mailbox"].invoke({"name": name, "desc": "task queue", "ttl": 600})
    again = tools["create_public_mailbox"].invoke({"name": name})
    assert first == again == f"Public mailbox created. mail_id='{name}'"


def test_langchain_send_and_get_messages(broker):
    tools = lc_tools(broker)
    mail_id = tools["create_mailbox"].invoke({"ttl": 600})
    sends = [
        ("low", "background job", "low"),
        ("normal", "h\u00e9llo \u2713", "normal"),
        ("high", "urgent task", "high"),
        ("urgent", "unknown priority word", "normal"),  # the tool maps it to normal
    ]
    for priority, content, effective in sends:
        out = tools["send_message"].invoke({"mail_id": mail_id, "content": content, "priority": priority})
        assert out == f"Message sent to '{mail_id}' with priority '{effective}'."
    assert tools["send_message"].invoke({"mail_id": mail_id, "content": "default"}) == \
        f"Message sent to '{mail_id}' with priority 'normal'."
    lc_wait_listed(tools, mail_id, 5)

    got = tools["get_messages"].invoke({"mail_id": mail_id})
    assert got == "\n".join([
        f"Found 5 message(s) in mailbox '{mail_id}':",
        "  [1] priority=high  content=urgent task",
        "  [2] priority=normal  content=h\u00e9llo \u2713",
        "  [3] priority=normal  content=unknown priority word",
        "  [4] priority=normal  content=default",
        "  [5] priority=low  content=background job",
    ])
    assert tools["get_messages"].invoke({"mail_id": mail_id}) == got, "get_messages must not consume"
    assert tools["get_messages"].invoke({"mail_id": mail_id, "limit": 2}) == "\n".join([
        f"Found 2 message(s) in mailbox '{mail_id}':",
        "  [1] priority=high  content=urgent task",
        "  [2] priority=normal  content=h\u00e9llo \u2713",
    ])


def test_langchain_list_and_delete_message(broker):
    tools = lc_tools(broker)
    mail_id = tools["create_mailbox"].invoke({"ttl": 600})
    t0 = time.time()
    for priority, content in [("high", "keep me"), ("low", "delete me"), ("normal", "keep me too")]:
        tools["send_message"].invoke({"mail_id": mail_id, "content": content, "priority": priority})
    listed = lc_wait_listed(tools, mail_id, 3)
    t1 = time.time()
    assert sorted(p for _, p, _ in listed) == ["high", "low", "normal"]
    assert len({i for i, _, _ in listed}) == 3
    assert all(plausible_ts(ts, t0, t1) for _, _, ts in listed), listed

    victim = next(i for i, p, _ in listed if p == "low")
    out = tools["delete_message"].invoke({"mail_id": mail_id, "msg_id": victim})
    assert out == f"Message '{victim}' deleted from mailbox '{mail_id}'."
    after = lc_list(tools, mail_id)
    assert sorted(after) == sorted(m for m in listed if m[0] != victim)
    assert tools["get_messages"].invoke({"mail_id": mail_id}) == "\n".join([
        f"Found 2 message(s) in mailbox '{mail_id}':",
        "  [1] priority=high  content=keep me",
        "  [2] priority=normal  content=keep me too",
    ])


def test_langchain_empty_mailbox(broker):
    tools = lc_tools(broker)
    mail_id = tools["create_mailbox"].invoke({"ttl": 600})
    assert tools["get_messages"].invoke({"mail_id": mail_id}) == f"No messages found in mailbox '{mail_id}'."
    assert tools["list_messages"].invoke({"mail_id": mail_id}) == f"No messages in mailbox '{mail_id}'."


def test_langchain_errors_reach_the_caller(broker):
    tools = lc_tools(broker)
    with pytest.raises(Mq9Error) as bad_name:
        tools["create_public_mailbox"].invoke({"name": "Not A Valid Name"})
    assert_broker_error(bad_name.value)
    ghost = unique_name("ghost")
    with pytest.raises(Mq9Error) as missing:
        tools["list_messages"].invoke({"mail_id": ghost})
    assert_broker_error(missing.value)
    # send is fire-and-forget: the tool reports success even for a mailbox that does not exist
    assert tools["send_message"].invoke({"mail_id": ghost, "content": "x"}) == \
        f"Message sent to '{ghost}' with priority 'normal'."
