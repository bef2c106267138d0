"""Mailbox traffic for cluster tests and bench/failover.py: a durable-send producer that retries,
a subscription reader, and the mq9 requests they need (nats-py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import nats
import nats.errors

from tests.support.nats_client import until

LEVELS = ("critical", "urgent", "normal")
IN_FLIGHT = 32
REQUEST_TIMEOUT = 3.0
RETRY_PAUSE = 0.05


def subject(address: str, level: str) -> str:
    return f"$mq9.AI.MAILBOX.{address}" if level == "normal" else f"$mq9.AI.MAILBOX.{address}.{level}"


def payload_level(payload: bytes) -> str:
    return payload.split(b"-", 1)[0].decode()


def make_payloads(count: int, tag: str = "") -> list[bytes]:
    """Unique payloads that name their priority: ``critical-tag-00007``."""
    return [f"{LEVELS[i % 3]}-{tag}-{i:05d}".encode() for i in range(count)]


@dataclass(frozen=True)
class Delivered:
    msg_id: int
    level: str
    payload: bytes


class Reader:
    """One mailbox subscription's deliveries, in arrival order."""

    def __init__(self) -> None:
        self.got: list[Delivered] = []

    async def on_msg(self, msg) -> None:
        self.got.append(Delivered(int(msg.headers["mq9-msg-id"]), msg.subject.rsplit(".", 1)[1], msg.data))

    def by_id(self) -> dict[int, bytes]:
        return {d.msg_id: d.payload for d in self.got}


async def subscribe(nc, address: str) -> Reader:
    reader = Reader()
    await nc.subscribe(f"$mq9.AI.MAILBOX.{address}.*", cb=reader.on_msg)
    await nc.flush()
    return reader


@dataclass
class Producer:
    """Durable sends with acks, many in flight; an attempt that fails is retried until acked."""

    nc: nats.NATS
    address: str
    acked: dict[bytes, int] = field(default_factory=dict)  # payload -> msg_id
    attempts: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    timeouts: int = 0
    acks: list[tuple[float, float]] = field(default_factory=list)  # (attempt sent, ack received)

    async def send(self, payload: bytes) -> None:
        target = subject(self.address, payload_level(payload))
        while True:
            self.attempts[payload] += 1
            sent = time.monotonic()
            try:
                reply = json.loads((await self.nc.request(target, payload, timeout=REQUEST_TIMEOUT)).data)
            except nats.errors.TimeoutError:  # sent to the killed node, or lost with its connection
                self.timeouts += 1
                continue
            if "msg_id" in reply:
                self.acked[payload] = reply["msg_id"]
                self.acks.append((sent, time.monotonic()))
                return
            self.errors.append(reply["error"])
            await asyncio.sleep(RETRY_PAUSE)

    async def run(self, payloads: list[bytes], in_flight: int = IN_FLIGHT) -> None:
        slots = asyncio.Semaphore(in_flight)

        async def one(payload: bytes) -> None:
            async with slots:
                await self.send(payload)

        await asyncio.gather(*(one(p) for p in payloads))

    def resumed_after(self, moment: float) -> float:
        """Seconds from ``moment`` to the first ack of an attempt sent after it."""
        return min(acked for sent, acked in self.acks if sent >= moment) - moment

    def retried(self) -> set[bytes]:
        return {p for p, n in self.attempts.items() if n > 1}


async def request(nc, subject_: str, body: bytes = b"", timeout: float = REQUEST_TIMEOUT) -> dict:
    return json.loads((await nc.request(subject_, body, timeout=timeout)).data)


async def list_ids(nc, address: str) -> list[int]:
    listing = await request(nc, f"$mq9.AI.MAILBOX.LIST.{address}")
    assert "error" not in listing, listing
    return [m["msg_id"] for m in listing["messages"]]


async def replay(url: str, address: str, count: int) -> list[Delivered]:
    """A fresh subscription's backlog on ``url``: waits for ``count`` deliveries, then a little more."""
    nc = await nats.connect(url)
    try:
        reader = await subscribe(nc, address)
        await until(lambda: len(reader.got) >= count, f"{count} replayed messages on {url}")
        await asyncio.sleep(0.2)  # anything past count would be a duplicate
        return reader.got
    finally:
        await nc.close()
