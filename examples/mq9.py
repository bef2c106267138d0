"""The few mq9 calls the examples share, in plain nats-py. Copy what you need.

Every mq9 operation is a NATS request or subscription on a `$mq9.AI.` subject; see docs/mailboxes.md.
"""

import asyncio
import json
import sys

import nats
import nats.errors


def servers_from_argv() -> list[str]:
    """`python example.py nats://a:4222,nats://b:4222 ...`: every URL of the cluster (default: localhost)."""
    return ",".join(sys.argv[1:] or ["nats://127.0.0.1:4222"]).split(",")


async def connect(servers: list[str], first: int = 0) -> nats.NATS:
    """Connect to the cluster, starting with servers[first]; reconnects to another node if that one dies."""
    ordered = servers[first % len(servers):] + servers[:first % len(servers)]
    return await nats.connect(servers=ordered, dont_randomize=True, reconnect_time_wait=0.2,
                              max_reconnect_attempts=-1, connect_timeout=2)


async def request(nc: nats.NATS, subject: str, body: bytes = b"{}") -> dict:
    """An mq9 request; retried while the cluster fails over (the error says `retry`, or no reply came)."""
    while True:
        try:
            reply = json.loads((await nc.request(subject, body, timeout=2)).data)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            continue  # our node died mid-request: nats-py is already reconnecting to another one
        if not reply.get("error", "").endswith("retry"):
            break
        await asyncio.sleep(0.1)
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply


async def create(nc: nats.NATS, **options) -> str:
    """Create a mailbox (options: ttl, public, name, desc); its address."""
    return (await request(nc, "$mq9.AI.MAILBOX.CREATE", json.dumps(options).encode()))["mail_address"]


async def send(nc: nats.NATS, address: str, body, priority: str = "normal") -> int:
    """Store `body` (bytes, str, or anything JSON) in a mailbox; its msg_id once replicated.

    A retried send whose first ack was lost may be stored twice: receivers that must not act twice
    carry an id in the body and skip what they saw (at-least-once, as with any broker)."""
    data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    return (await request(nc, f"$mq9.AI.MAILBOX.{address}.{priority}", data))["msg_id"]
