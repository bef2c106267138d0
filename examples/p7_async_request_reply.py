"""Pattern 7: asynchronous request-reply while the responder is offline.

The requester stores a request in the responder's public mailbox with `reply_to` (its own
mailbox) and a `correlation_id`, and does not wait on a connection. The responder comes online
later, answers every stored request to its `reply_to`, echoing the `correlation_id`; the
requester matches answers to questions by that id.
"""

import asyncio
import json
import uuid

from mq9 import connect, create, send, servers_from_argv


async def responder(servers, count):
    nc = await connect(servers, first=1)
    await create(nc, public=True, name="svc.fx", desc="currency conversion", ttl=3600)
    sub = await nc.subscribe("$mq9.AI.MAILBOX.svc.fx.*", queue="fx-service")  # resumes where it left off
    for _ in range(count):
        req = json.loads((await sub.next_msg(timeout=10)).data)
        answer = {"correlation_id": req["correlation_id"], "eur": round(req["usd"] * 0.92, 2)}
        await send(nc, req["reply_to"], answer)
    print(f"responder: answered {count} requests", flush=True)
    await nc.close()


async def main(servers):
    nc = await connect(servers)
    await create(nc, public=True, name="svc.fx", desc="currency conversion", ttl=3600)
    replies = await create(nc, ttl=600)
    asked = {}
    for usd in (100, 250):
        correlation_id = str(uuid.uuid4())
        asked[correlation_id] = usd
        await send(nc, "svc.fx", {"usd": usd, "reply_to": replies, "correlation_id": correlation_id})
    print("requester: 2 requests stored, responder offline", flush=True)

    await responder(servers, count=2)

    sub = await nc.subscribe(f"$mq9.AI.MAILBOX.{replies}.*")
    for _ in asked:
        reply = json.loads((await sub.next_msg(timeout=10)).data)
        print(f"requester: {asked[reply['correlation_id']]} USD = {reply['eur']} EUR", flush=True)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(servers_from_argv()))
