"""Failover time of a three-node mq9cluster: kill -9 the leader under load, time the way back.

Starts three nodes on loopback ports (the test suite's cluster helper) and, per round, keeps
--in-flight durable sends in flight through a follower (nats-py), SIGKILLs the leader and records

  elected  kill -> the survivors agree on a new leader (/raftz, polled every 50 ms)
  resumed  kill -> the first ack of a send made after the kill (what a client sees)

then restarts the killed node on its data dir and waits until it has caught up. Every acked send
is checked to be stored. Medians and maxima over the rounds are printed.

    .venv/bin/python bench/failover.py              # 7 kills, about half a minute here
    .venv/bin/python bench/failover.py --kills 3

Exits 1 if the median `resumed` misses the target (--target, 3 s) or an acked send is missing,
2 if the cluster failed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support, when run as a script

from tests.support.cluster import Cluster  # noqa: E402
from tests.support.mailbox_traffic import Producer, list_ids, make_payloads, request  # noqa: E402
from tests.support.nats_client import until  # noqa: E402


async def one_kill(group: Cluster, sends: int, in_flight: int) -> tuple[float, float, int]:
    """Kill the leader once under load: (elected, resumed, acked sends missing from the store)."""
    leader = await asyncio.to_thread(group.wait_leader)
    follower = next(node for node in group.nodes if node is not leader)
    nc = await nats.connect(follower.url)
    try:
        address = (await request(nc, "$mq9.AI.MAILBOX.CREATE", b"{}"))["mail_address"]
        producer = Producer(nc, address)
        sending = asyncio.ensure_future(producer.run(make_payloads(sends), in_flight))
        await until(lambda: len(producer.acked) >= sends // 10, "acks before the kill")
        killed_at = time.monotonic()
        leader.kill()
        await asyncio.to_thread(group.wait_leader)
        elected = time.monotonic() - killed_at
        await asyncio.wait_for(sending, 60)
        resumed = producer.resumed_after(killed_at)
        missing = len(set(producer.acked.values()) - set(await list_ids(nc, address)))
    finally:
        await nc.close()
    await asyncio.to_thread(leader.start)
    await asyncio.to_thread(group.wait_applied)
    return elected, resumed, missing


async def bench(args: argparse.Namespace, workdir: Path) -> int:
    group = Cluster(workdir, 3).start()
    try:
        elected, resumed, missing = [], [], 0
        for round_ in range(1, args.kills + 1):
            e, r, m = await one_kill(group, args.sends, args.in_flight)
            elected.append(e)
            resumed.append(r)
            missing += m
            print(f"kill {round_}: new leader after {e:.2f} s, writes resumed after {r:.2f} s"
                  + (f", {m} acked sends MISSING" if m else ""), flush=True)
    finally:
        group.stop()
    print(f"elected: median {statistics.median(elected):.2f} s, max {max(elected):.2f} s")
    print(f"resumed: median {statistics.median(resumed):.2f} s, max {max(resumed):.2f} s "
          f"(target: median < {args.target:.1f} s)")
    if missing:
        print(f"FAIL: {missing} acknowledged sends missing")
    if statistics.median(resumed) >= args.target:
        print("FAIL: failover slower than the target")
    return 1 if missing or statistics.median(resumed) >= args.target else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=7, help="leader kills (rounds)")
    parser.add_argument("--sends", type=int, default=3000, help="durable sends per round")
    parser.add_argument("--in-flight", type=int, default=32, help="sends in flight at once")
    parser.add_argument("--target", type=float, default=3.0, help="seconds the median `resumed` must stay under")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mq9-failover-") as workdir:
        try:
            return asyncio.run(bench(args, Path(workdir)))
        except BaseException as exc:  # the cluster helper reports with pytest.fail (a BaseException)
            print(f"cluster failed: {exc!r}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
