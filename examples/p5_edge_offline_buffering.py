"""Pattern 5: an edge agent offline for hours; its emergency command comes first on reconnect.

While the edge agent has no link, the cloud keeps storing work in its mailbox: a long backlog of
routine telemetry requests (here 1,000 stand in for hours of them) and, near the end, one
`critical` emergency stop. When the edge reconnects, to whichever node answers, the emergency is
delivered before the backlog; nothing is lost.
"""

import asyncio
import json

from mq9 import connect, create, send, servers_from_argv

BACKLOG = 1000


async def cloud(servers, edge_box):
    nc = await connect(servers, first=1)
    in_flight = asyncio.Semaphore(64)

    async def routine(seq):
        async with in_flight:
            await send(nc, edge_box, {"seq": seq, "cmd": "report sensor 7"}, priority="low")
            if seq % 250 == 0:
                print(f"cloud: {seq} routine commands stored", flush=True)

    await asyncio.gather(*(routine(seq) for seq in range(1, BACKLOG + 1)))
    await send(nc, edge_box, {"seq": 0, "cmd": "EMERGENCY STOP valve 3"}, priority="critical")
    print("cloud: emergency stop stored", flush=True)
    await nc.close()


async def main(servers):
    nc = await connect(servers)
    edge_box = await create(nc, public=True, name="edge.plant7", desc="edge agent, plant 7")
    await nc.close()
    print("edge: link down", flush=True)

    await cloud(servers, edge_box)

    nc = await connect(servers, first=2)  # the link is back
    sub = await nc.subscribe(f"$mq9.AI.MAILBOX.{edge_box}.*")
    first = json.loads((await sub.next_msg(timeout=10)).data)
    print(f"edge: link up, first command: {first['cmd']}", flush=True)
    seen = set()  # a send retried during a failover may be stored twice: act once per seq
    while len(seen) < BACKLOG:
        seen.add(json.loads((await sub.next_msg(timeout=10)).data)["seq"])
    print(f"edge: then {len(seen)} routine commands, none missing", flush=True)
    assert first["cmd"].startswith("EMERGENCY")
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(servers_from_argv()))
