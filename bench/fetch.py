"""Pull consumption with acknowledgements: mq9cluster dialect 3 (FETCH + ACK by a group) vs
JetStream pull consumers (R3 stream, durable consumer, explicit ack), 3 nodes each.

Each run starts a fresh 3-node cluster of one system (the clusters of bench/cluster.py), fills a
new mailbox / stream with --messages acked sends through the leader's node (bench/mailbox.py's
sender), then drains it with 1 and with 8 workers of one group, the workers spread over the three
nodes. A worker loops: fetch up to --batch messages, acknowledge them, repeat.

  mq9cluster  request `$mq9.AI.MSG.FETCH.{A}` {"group_name": "bench", "config": {"num_msgs": B,
              "max_wait_ms": 200}}, then one request `$mq9.AI.MSG.ACK.{A}` with the batch's msg_ids,
              answered once the ack is committed (fetch and ack are each one Raft commit).
  JetStream   `pull_subscribe_bind` to one durable consumer (AckPolicy.EXPLICIT, replicated like the
              stream), `fetch(B)`, then `msg.ack()` per message (a publish nobody confirms: the
              usual way; JetStream's acks are not waited for, mq9cluster's are).

Figure: distinct messages consumed per second, from the first fetch to the last message. Exits 1
if a message was never consumed, 2 if a server failed to start or died unasked.

    .venv/bin/python bench/fetch.py            # 3 runs per system
    .venv/bin/python bench/fetch.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig

from cluster import LABELS, SYSTEMS, Cluster, alternate, ignore
from core_pubsub import versions
from mailbox import BenchError, conclude, filesystem, fsync_rate, send

GROUP = "bench"
DRAIN_LIMIT = 120.0  # seconds a drain may take before it counts as a failure
DEFAULTS = {"messages": 20_000, "runs": 3}
QUICK = {"messages": 2_000, "runs": 1}


async def mq9_worker(nc, address: str, batch: int, seen: set[int], done: asyncio.Event) -> None:
    """FETCH a batch for the group, ACK it, again, until every message was seen."""
    fetch = json.dumps({"group_name": GROUP, "config": {"num_msgs": batch, "max_wait_ms": 200}}).encode()
    while not done.is_set():
        reply = json.loads((await nc.request(f"$mq9.AI.MSG.FETCH.{address}", fetch, timeout=30)).data)
        if reply["error"]:
            raise BenchError(f"mq9cluster FETCH failed: {reply['error']}")
        ids = [m["msg_id"] for m in reply["messages"]]
        if ids:
            ack = json.dumps({"group_name": GROUP, "msg_ids": ids}).encode()
            answer = json.loads((await nc.request(f"$mq9.AI.MSG.ACK.{address}", ack, timeout=30)).data)
            if answer["error"]:
                raise BenchError(f"mq9cluster ACK failed: {answer['error']}")
            seen.update(ids)


async def js_worker(nc, stream: str, batch: int, seen: set[int], done: asyncio.Event) -> None:
    """fetch a batch from the durable pull consumer, ack each message, again."""
    psub = await nc.jetstream().pull_subscribe_bind(durable=GROUP, stream=stream)
    try:
        while not done.is_set():
            try:
                msgs = await psub.fetch(batch, timeout=0.2)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
                seen.add(msg.metadata.sequence.stream)
    finally:
        await psub.unsubscribe()


async def drain(cluster: Cluster, control, subject: str, tag: str, workers: int, batch: int,
                expected: int) -> tuple[float, int]:
    """Consume the whole mailbox / stream with `workers` workers; (seconds, distinct messages)."""
    if cluster.system == "js":
        stream = control.stream(tag)
        await control.js.add_consumer(stream, ConsumerConfig(durable_name=GROUP, ack_policy=AckPolicy.EXPLICIT,
                                                             max_ack_pending=-1))
    conns = [await nats.connect(cluster.urls[i % len(cluster.urls)], allow_reconnect=False) for i in range(workers)]
    seen: set[int] = set()
    done = asyncio.Event()
    start = time.perf_counter()
    if cluster.system == "mq9":
        address = subject.removeprefix("$mq9.AI.MAILBOX.")
        tasks = [asyncio.ensure_future(mq9_worker(nc, address, batch, seen, done)) for nc in conns]
    else:
        tasks = [asyncio.ensure_future(js_worker(nc, stream, batch, seen, done)) for nc in conns]
    try:
        deadline = start + DRAIN_LIMIT
        while len(seen) < expected and time.perf_counter() < deadline:
            failed = next((t for t in tasks if t.done()), None)
            if failed is not None:
                failed.result()  # raises the worker's error
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - start
    finally:
        done.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for nc in conns:
            await nc.close()
    return elapsed, len(seen)


async def bench_fetch(cluster: Cluster, run: int, args: argparse.Namespace) -> tuple[dict[str, float], list[str]]:
    """Fill and drain once per worker count; (figures, problems)."""
    label = LABELS[cluster.system]
    figures: dict[str, float] = {}
    problems: list[str] = []
    ctl = await nats.connect(servers=cluster.urls, allow_reconnect=False, error_cb=ignore)
    try:
        control = cluster.target(ctl)
        await cluster.ready(control)
        for workers in args.workers:
            tag = f"r{run}_w{workers}"
            subject, _ = await control.create(tag)
            leader = await cluster.leader(control, tag)
            nc = await nats.connect(cluster.urls[leader], allow_reconnect=False)
            try:
                sent = await send(nc, cluster.target(nc), subject, args.messages, args.in_flight, args.size)
            finally:
                await nc.close()
            elapsed, got = await drain(cluster, control, subject, tag, workers, args.batch, len(sent.acked))
            figures[f"w{workers}"] = got / elapsed
            issues = sent.errors[:1] + ([f"{len(sent.acked) - got} acked messages never consumed"]
                                        if got < len(sent.acked) else [])
            problems.extend(f"{label} run {run + 1} x{workers}: {issue}" for issue in issues)
            print(f"run {run + 1}/{args.runs} {label:<13} {workers} worker(s): {got:,} fetched+acked in "
                  f"{elapsed:.2f} s = {figures[f'w{workers}']:,.0f} msg/s"
                  + "".join(f"\n    PROBLEM: {i}" for i in issues), flush=True)
    finally:
        await ctl.close()
    return figures, problems


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, help=f"messages per drain (default {DEFAULTS['messages']})")
    p.add_argument("--runs", type=int, help=f"runs per system, alternating (default {DEFAULTS['runs']})")
    p.add_argument("--size", type=int, default=128, help="payload bytes (default 128)")
    p.add_argument("--in-flight", type=int, default=256, help="concurrent sends while filling (default 256)")
    p.add_argument("--batch", type=int, default=100, help="messages per fetch (default 100)")
    p.add_argument("--workers", type=lambda text: [int(w) for w in text.split(",")], default=[1, 8],
                   help="worker counts, comma list (default 1,8)")
    p.add_argument("--quick", action="store_true", help="smoke run: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()))
    args = p.parse_args()
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if min(args.messages, args.runs, args.batch, args.in_flight, *args.workers) < 1:
        p.error("counts must be >= 1")
    return args


def main() -> int:
    args = parse_args()
    print(f"fetch bench: 3 nodes per system on loopback, {args.messages:,} x {args.size} B per drain, "
          f"fetch batches of {args.batch}, workers {args.workers}; {args.runs} run(s) per system")
    print(versions("nats-py"))
    print(f"machine: nproc={len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f}; "
          "all servers and workers share it: compare the systems within one run")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SYSTEMS}
    problems: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="mq9-bench-fetch-"))
    print(f"data: {workdir} on {filesystem(workdir)}; disk {fsync_rate(workdir):,.0f} fsyncs/s")
    try:
        failed = alternate(args.runs, workdir, lambda cluster, run: bench_fetch(cluster, run, args), results, problems)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        return failed
    print(f"\nmedians over {args.runs} run(s), fetch+ack msg/s; ratio = mq9cluster R3 / JetStream R3")
    for workers in args.workers:
        mq9, js = (statistics.median(r[f"w{workers}"] for r in results[name]) for name in SYSTEMS)
        print(f"  {workers} worker(s): mq9cluster {mq9:>10,.0f}   JetStream {js:>10,.0f}   ratio {mq9 / js:.2f}")
    return conclude(problems)


if __name__ == "__main__":
    sys.exit(main())
