"""nats-py helpers for end-to-end tests against real brokers: connect, request, create, collect, wait."""

from __future__ import annotations

import asyncio
import json
import time

import nats

ORDER = ["critical", "urgent", "normal", "low"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def connect(broker, **options):
    """A nats-py connection to ``broker`` with short reconnect waits (``options`` override them)."""
    defaults = {"connect_timeout": 2, "reconnect_time_wait": 0.1, "max_reconnect_attempts": 200}
    return await nats.connect(broker.url, **{**defaults, **options})


async def request(nc, subject: str, body: bytes = b"", timeout: float = 5.0) -> dict:
    return json.loads((await nc.request(subject, body, timeout=timeout)).data)


async def create(nc, **options) -> str:
    reply = await request(nc, "$mq9.AI.MAILBOX.CREATE", json.dumps(options).encode())
    assert "error" not in reply, reply
    assert reply["mail_address"] == reply["mail_id"]
    return reply["mail_address"]


async def collect(nc, subject: str, **options) -> list:
    """Subscribe with a callback that appends each message to the returned list."""
    got: list = []

    async def cb(msg):
        got.append(msg)

    await nc.subscribe(subject, cb=cb, **options)
    return got


async def until(predicate, what: str, timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
