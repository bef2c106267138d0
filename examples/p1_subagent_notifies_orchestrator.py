"""Pattern 1: a sub-agent notifies its orchestrator, which is offline when the result is sent.

The orchestrator creates a private mailbox, hands its address to a sub-agent and goes offline.
The sub-agent stores its result there. When the orchestrator reconnects (to any node) and
subscribes, the stored result is delivered first.
"""

import asyncio
import json

from mq9 import connect, create, send, servers_from_argv


async def sub_agent(servers, reply_to):
    nc = await connect(servers, first=1)
    await send(nc, reply_to, {"task": "summarise-q3", "summary": "revenue up 12%"}, priority="urgent")
    print("sub-agent: result stored for the orchestrator", flush=True)
    await nc.close()


async def main(servers):
    nc = await connect(servers)
    inbox = await create(nc, ttl=3600)
    print(f"orchestrator: my mailbox is {inbox}; going offline", flush=True)
    await nc.close()

    await sub_agent(servers, inbox)
    await asyncio.sleep(1)  # the orchestrator is still offline (the tests kill a node here)

    nc = await connect(servers, first=2)
    sub = await nc.subscribe(f"$mq9.AI.MAILBOX.{inbox}.*")
    msg = await sub.next_msg(timeout=10)
    result = json.loads(msg.data)
    print(f"orchestrator: back online, got {result['summary']!r} ({msg.subject.rsplit('.', 1)[1]})", flush=True)
    assert result["task"] == "summarise-q3"
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(servers_from_argv()))
