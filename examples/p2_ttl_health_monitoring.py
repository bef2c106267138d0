"""Pattern 2: TTL-based health monitoring.

Each worker registers a public mailbox `health.{name}` with a short TTL. mq9 has no keep-alive:
when the mailbox expires, a live worker re-creates it at once, so a live worker's name is back
within moments. The orchestrator watches `$mq9.AI.PUBLIC.LIST`: an `expired` event that is not
followed by a new `created` within a grace period means the worker is gone.
"""

import asyncio
import json

from mq9 import connect, create, servers_from_argv

TTL = 2  # seconds: how quickly a dead worker is noticed
GRACE = 1.5  # seconds an expired worker has to re-register


async def worker(servers, name, lifetime):
    nc = await connect(servers)
    mailbox = await create(nc, public=True, name=f"health.{name}", desc="worker heartbeat", ttl=TTL)
    events = await nc.subscribe("$mq9.AI.PUBLIC.LIST")
    loop = asyncio.get_running_loop()
    end = loop.time() + lifetime
    while loop.time() < end:
        try:
            event = json.loads((await events.next_msg(timeout=end - loop.time())).data)
        except asyncio.TimeoutError:
            break
        if event["event"] == "expired" and event["mail_address"] == mailbox:
            await create(nc, public=True, name=mailbox, desc="worker heartbeat", ttl=TTL)
    print(f"{name}: stopping", flush=True)
    await nc.close()  # from now on nobody re-creates health.{name}


async def orchestrator(servers, watch_for):
    nc = await connect(servers)
    events = await nc.subscribe("$mq9.AI.PUBLIC.LIST")
    expired_at = {}  # worker -> when its mailbox expired
    dead = set()
    loop = asyncio.get_running_loop()
    end = loop.time() + watch_for
    while loop.time() < end:
        try:
            event = json.loads((await events.next_msg(timeout=0.2)).data)
            name = event["mail_address"]
            if name.startswith("health.") and event["event"] == "created":
                expired_at.pop(name, None)
            elif name.startswith("health.") and event["event"] == "expired":
                expired_at[name] = loop.time()
        except asyncio.TimeoutError:
            pass
        for name, when in list(expired_at.items()):
            if loop.time() - when > GRACE and name not in dead:
                print(f"orchestrator: {name} expired and did not come back: worker down", flush=True)
                dead.add(name)
    await nc.close()
    return dead


async def main(servers):
    watching = asyncio.create_task(orchestrator(servers, watch_for=6))
    await asyncio.sleep(0.5)
    await asyncio.gather(worker(servers, "alpha", lifetime=6), worker(servers, "beta", lifetime=1))
    dead = await watching
    assert dead == {"health.beta"}, dead
    print("orchestrator: alpha kept re-registering, beta is down", flush=True)


if __name__ == "__main__":
    asyncio.run(main(servers_from_argv()))
