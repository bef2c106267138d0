"""Pattern 3: a task queue with competing consumers on different nodes.

The producer stores tasks in one mailbox. Workers subscribe with the same queue group, each to a
different node of the cluster: every task goes to exactly one of them, cluster-wide. Workers
report to the producer's results mailbox; a task id in each body makes the count checkable.
"""

import asyncio
import json
from collections import Counter

from mq9 import connect, create, send, servers_from_argv

TASKS = 30


async def worker(servers, name, node, queue, results):
    nc = await connect(servers, first=node)

    async def handle(msg):
        task = json.loads(msg.data)
        await asyncio.sleep(0.1)  # the work
        print(f"{name}: did task {task['id']}", flush=True)
        await send(nc, results, {"task": task["id"], "worker": name})

    await nc.subscribe(f"$mq9.AI.MAILBOX.{queue}.*", queue="workers", cb=handle)
    return nc


async def main(servers):
    nc = await connect(servers, first=2)
    queue = await create(nc, ttl=3600)
    results = await create(nc, ttl=3600)
    workers = [await worker(servers, name, node, queue, results) for node, name in enumerate(["w-a", "w-b"])]
    for task_id in range(TASKS):
        await send(nc, queue, {"id": task_id, "job": f"resize image {task_id}"})
    print(f"producer: {TASKS} tasks queued", flush=True)

    done = {}  # task -> workers that reported it (a retried report may arrive twice from one worker)
    reports = await nc.subscribe(f"$mq9.AI.MAILBOX.{results}.*")
    while len(done) < TASKS:
        report = json.loads((await reports.next_msg(timeout=30)).data)
        done.setdefault(report["task"], set()).add(report["worker"])
    assert all(len(by) == 1 for by in done.values()), done
    print(f"producer: every task done exactly once, {dict(Counter(w for (w,) in done.values()))}", flush=True)
    for w in workers:
        await w.close()
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(servers_from_argv()))
