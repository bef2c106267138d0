"""Pattern 4: anomaly broadcast to handlers that are offline when it happens.

A monitor stores alerts in the public mailbox `alerts.anomaly` while no handler is connected.
Each handler that subscribes later gets every stored alert, `critical` first, then live ones:
a mailbox subscription without a queue group is a broadcast.
"""

import asyncio

from mq9 import connect, create, send, servers_from_argv


async def handler(servers, name, node, expect):
    nc = await connect(servers, first=node)
    sub = await nc.subscribe("$mq9.AI.MAILBOX.alerts.anomaly.*")
    got = [(await sub.next_msg(timeout=10)) for _ in range(expect)]
    for msg in got:
        print(f"{name}: [{msg.subject.rsplit('.', 1)[1]}] {msg.data.decode()}", flush=True)
    await nc.close()
    return [msg.data for msg in got]


async def main(servers):
    nc = await connect(servers)
    await create(nc, public=True, name="alerts.anomaly", desc="anomalies, critical first", ttl=3600)
    await send(nc, "alerts.anomaly", "disk 71% on db-2", priority="low")
    await send(nc, "alerts.anomaly", "p99 latency 2x baseline", priority="normal")
    await send(nc, "alerts.anomaly", "payment error rate 30%", priority="critical")
    print("monitor: 3 alerts stored, no handler online", flush=True)
    await nc.close()

    pager, dashboard = await asyncio.gather(handler(servers, "pager", 1, 3), handler(servers, "dashboard", 2, 3))
    assert pager == dashboard and pager[0] == b"payment error rate 30%", pager


if __name__ == "__main__":
    asyncio.run(main(servers_from_argv()))
