"""Pattern 6: human-in-the-loop approval.

The agent posts its question to the public mailbox `approvals` with the address of its own
mailbox, then waits. A person reads the question and answers with nothing but the mq9cluster
command (any node will do):

    mq9cluster mailbox --server nats://127.0.0.1:4222 watch approvals
    mq9cluster mailbox --server nats://127.0.0.1:4222 send ADDRESS approve

The agent may be offline meanwhile: the answer waits in its mailbox.
"""

import asyncio
import json

from mq9 import connect, create, send, servers_from_argv


async def main(servers):
    nc = await connect(servers)
    await create(nc, public=True, name="approvals", desc="questions for a human", ttl=86400)
    inbox = await create(nc, ttl=3600)
    await send(nc, "approvals", {"ask": "delete 1,204 stale customer records?", "reply_to": inbox}, priority="urgent")
    print(f"agent: asked; answer with: mq9cluster mailbox send {inbox} approve|reject", flush=True)

    sub = await nc.subscribe(f"$mq9.AI.MAILBOX.{inbox}.*")
    answer = (await sub.next_msg(timeout=600)).data.decode().strip()
    if answer == "approve":
        print("agent: approved, deleting the records", flush=True)
    else:
        print(f"agent: not approved ({answer!r}), stopping", flush=True)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(servers_from_argv()))
