"""R3 durable sends and failover: a 3-node mq9cluster vs a 3-node nats-server JetStream cluster (R3, file store).

Each run starts a fresh 3-node cluster of one system on free loopback ports (data directories and
logs under one temporary directory), measures it, and stops it; the two systems alternate run by run
and are driven by the same client (nats-py, uvloop when available). mq9cluster sends go to mailboxes
(`$mq9.AI.MAILBOX.{addr}`, acked once committed and fsynced on a Raft quorum); JetStream sends go to
a file-stored stream with num_replicas=3 (acked by a PubAck once a quorum stored it, no fsync per
write). Phases, each on a fresh mailbox / stream:

  send      --in-flight acked requests at a time to the leader's node: msgs/s (then read back and checked)
  ack       one request in flight to the leader's node: ack latency p50/p99 (then read back and checked)
  failover  a producer connected to all three nodes (the leader's first) sends one acked message at a
            time and retries each failure (error reply, --retry-timeout, or its connection dropping);
            after --warmup s the leader (mq9cluster: Raft leader from /raftz; JetStream: the stream's
            leader) gets SIGKILL; figure: kill -> ack of the first send started after the kill. Then
            every acked message must be read back from a surviving node (JetStream: pull fetches; read
            again, for up to 30 s, while the node delivers fewer than it says it stores).

A killed node is not restarted: the next run starts new clusters.

    .venv/bin/python bench/cluster.py              # 3 runs per system, a few minutes
    .venv/bin/python bench/cluster.py --quick      # smoke run

Exits 1 if an acked message was missing or stored twice, a send failed outside the failover phase, or
writes did not resume within --failover-limit; 2 if a server failed to start or died unasked.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors

from core_pubsub import Server, _run_loop, free_ports, mq9_argv, nats_argv, report_failure, versions
from mailbox import (
    HEAD, BenchError, Collector, JetStream, Mq9, Sent, conclude, filesystem, fsync_rate, parse_send_options,
    percentiles_ms, read_back, send, send_options,
)

NODES = 3
SYSTEMS = ("mq9", "js")
LABELS = {"mq9": "mq9cluster R3", "js": "JetStream R3"}
LEADER_TIMEOUT = 30.0
RETRY_PAUSE = 0.01  # after a failed attempt, so that a refusal at once does not spin
RECONNECT_WAIT = 0.05  # nats-py's pause before trying the same server again (its default is 2 s)
DEFAULTS = {"messages": 20_000, "latency_messages": 2_000, "runs": 3}
QUICK = {"messages": 2_000, "latency_messages": 300, "runs": 1}


# ---------------------------------------------------------------- the two clusters


class Cluster:
    """Three server processes on loopback; a subclass says how to start them and who leads."""

    system = ""  # key in SYSTEMS
    program = ""  # the servers' name in messages

    def __init__(self, workdir: Path, names: list[str], ports: list[int], argvs: list[list[str]]) -> None:
        self.workdir, self.names = workdir, names
        self.nodes = [Server(f"{self.program} {name}", argv, port, workdir / f"{name}.log")
                      for name, port, argv in zip(names, ports, argvs)]
        self.killed: set[int] = set()

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{node.port}" for node in self.nodes]

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self, index: int) -> None:
        self.killed.add(index)
        self.nodes[index].kill()

    def death(self) -> str:
        """Empty while every node not killed on purpose runs, else how the first other one ended."""
        return next((node.death() for i, node in enumerate(self.nodes)
                     if i not in self.killed and node.death()), "")

    def unkilled(self) -> dict[str, Server]:
        """The nodes not killed on purpose, by name (what `report_failure` should look at)."""
        return {node.name: node for i, node in enumerate(self.nodes) if i not in self.killed}

    def target(self, nc):
        """The client-side view (mailbox.Mq9 or mailbox.JetStream) over connection `nc`."""
        raise NotImplementedError

    async def ready(self, target) -> None:
        """Until the cluster takes durable writes."""
        await target.ready()

    async def leader(self, target, tag: str) -> int:
        """Index of the node leading phase `tag`'s writes."""
        raise NotImplementedError


class Mq9Cluster(Cluster):
    """mq9cluster nodes n1..n3, each given all three Raft addresses with --peers."""

    system, program = "mq9", "mq9cluster"

    def __init__(self, workdir: Path) -> None:
        ports = free_ports(3 * NODES)
        clients, self.http_ports, raft_ports = ports[0::3], ports[1::3], ports[2::3]
        self.raft_addrs = [f"127.0.0.1:{port}" for port in raft_ports]
        names = [f"n{i + 1}" for i in range(NODES)]
        super().__init__(workdir, names, clients, [
            mq9_argv(clients[i], workdir / name, http_port=self.http_ports[i], raft_port=raft_ports[i])
            + ["--peers", ",".join(self.raft_addrs), "--node-id", name]
            for i, name in enumerate(names)])

    def target(self, nc) -> Mq9:
        return Mq9(nc)

    def raftz(self, index: int) -> dict | None:
        """Node `index`'s /raftz, or None if it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_ports[index]}/raftz", timeout=2) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    async def leader(self, target, tag: str) -> int:
        """The node every running node names as Raft leader, once they agree."""
        deadline = time.monotonic() + LEADER_TIMEOUT
        while True:
            running = [i for i in range(NODES) if i not in self.killed]
            views = await asyncio.gather(*(asyncio.to_thread(self.raftz, i) for i in running))
            named = {view["leader"] if view else None for view in views}
            if len(named) == 1 and (addr := named.pop()) in self.raft_addrs:
                return self.raft_addrs.index(addr)
            if time.monotonic() > deadline:
                raise BenchError(f"mq9cluster: no agreed leader within {LEADER_TIMEOUT:.0f} s: {views}")
            await asyncio.sleep(0.05)


class JsCluster(Cluster):
    """nats-server nodes js1..js3 with JetStream, routed to each other (config files in the workdir)."""

    system, program = "js", "nats-server"

    def __init__(self, workdir: Path) -> None:
        ports = free_ports(2 * NODES)
        clients, routes = ports[0::2], ports[1::2]
        names = [f"js{i + 1}" for i in range(NODES)]
        route_urls = ", ".join(f"nats-route://127.0.0.1:{port}" for port in routes)
        self.configs = [
            f'server_name: {name}\nlisten: "127.0.0.1:{clients[i]}"\n'
            f'jetstream {{ store_dir: "{workdir / name}" }}\n'
            f'cluster {{\n  name: bench\n  listen: "127.0.0.1:{routes[i]}"\n  routes: [{route_urls}]\n}}\n'
            for i, name in enumerate(names)]
        argvs = [nats_argv(port) + ["-c", str(workdir / f"{name}.conf")] for name, port in zip(names, clients)]
        super().__init__(workdir, names, clients, argvs)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name, config in zip(self.names, self.configs):
            (self.workdir / f"{name}.conf").write_text(config)
        super().start()

    def target(self, nc) -> JetStream:
        return JetStream(nc, replicas=NODES)

    async def ready(self, target) -> None:
        """JetStream answers, and an R3 stream can be placed (all three servers joined the meta group)."""
        await target.ready()
        deadline = time.monotonic() + LEADER_TIMEOUT
        while True:
            try:
                await target.create("ready")
                await target.js.delete_stream(target.stream("ready"))
                return
            except Exception as exc:  # noqa: BLE001 - "not yet" until the deadline
                if time.monotonic() > deadline:
                    raise BenchError(f"JetStream: no R3 stream placed within {LEADER_TIMEOUT:.0f} s: {exc}") from None
                await asyncio.sleep(0.2)

    async def leader(self, target, tag: str) -> int:
        """The server that leads phase `tag`'s stream."""
        deadline = time.monotonic() + LEADER_TIMEOUT
        while True:
            try:
                info = await target.js.stream_info(target.stream(tag))
                if info.cluster and info.cluster.leader in self.names:
                    return self.names.index(info.cluster.leader)
            except Exception as exc:  # noqa: BLE001
                info = exc
            if time.monotonic() > deadline:
                raise BenchError(f"JetStream: stream {target.stream(tag)} has no leader: {info}")
            await asyncio.sleep(0.05)


CLUSTERS = {"mq9": Mq9Cluster, "js": JsCluster}


# ---------------------------------------------------------------- failover


async def ignore(exc: Exception) -> None:
    """nats-py error callback for connections that see a node die on purpose (else it logs each error)."""


class Producer:
    """One acked send at a time, each failed attempt retried with the same seq and a new timestamp.

    An attempt still waiting when the connection drops is abandoned at once (as a client that
    watches its connection would do) rather than left to run out its timeout: the figure is then
    the cluster's, not the retry timeout's.
    """

    def __init__(self, subject: str, size: int, timeout: float) -> None:
        self.subject, self.timeout = subject, timeout
        self.pad = b"x" * (size - HEAD.size)
        self.acked: list[tuple[int, int]] = []  # (seq, sent_ns) of each acked attempt
        self.acked_at: list[int] = []  # perf_counter_ns of each ack
        self.failures: collections.Counter[str] = collections.Counter()  # kind -> attempts
        self._attempt: asyncio.Future | None = None

    async def run(self, nc, target, stop: asyncio.Event) -> None:
        """Until `stop` is set; then returns after the attempt under way."""
        seq = 0
        while not stop.is_set():
            start = time.perf_counter_ns()
            self._attempt = asyncio.ensure_future(
                nc.request(self.subject, HEAD.pack(seq, start) + self.pad, timeout=self.timeout))
            try:
                error = target.ack_error((await self._attempt).data)
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    raise
                error = "abandoned: disconnected"
            except Exception as exc:  # noqa: BLE001 - any failure is retried
                error = type(exc).__name__
            if error is None:
                self.acked.append((seq, start))
                self.acked_at.append(time.perf_counter_ns())
                seq += 1
            else:
                self.failures[error[:100]] += 1
                await asyncio.sleep(RETRY_PAUSE)

    async def on_disconnect(self) -> None:
        if self._attempt is not None:
            self._attempt.cancel()

    def first_ack_after(self, start_ns: int) -> int | None:
        """perf_counter_ns of the ack of the first attempt sent at or after `start_ns`, if any yet."""
        return next((at for (_, sent), at in zip(self.acked, self.acked_at) if sent >= start_ns), None)


async def kill_under_producer(cluster: Cluster, leader: int, subject: str,
                              args: argparse.Namespace) -> tuple[Producer, float | None]:
    """Send through a connection to all nodes (the leader's first), SIGKILL the leader after --warmup s;
    (the producer, seconds from the kill to the first ack of a send started after it, or None)."""
    order = [leader] + [i for i in range(NODES) if i != leader]
    producer, stop = Producer(subject, args.size, args.retry_timeout), asyncio.Event()
    nc = await nats.connect(servers=[cluster.urls[i] for i in order], dont_randomize=True, error_cb=ignore,
                            disconnected_cb=producer.on_disconnect, reconnect_time_wait=RECONNECT_WAIT,
                            max_reconnect_attempts=-1)
    task = asyncio.create_task(producer.run(nc, cluster.target(nc), stop))
    try:
        await asyncio.sleep(args.warmup)
        kill_ns = time.perf_counter_ns()
        cluster.kill(leader)
        deadline = time.monotonic() + args.failover_limit
        while (resumed := producer.first_ack_after(kill_ns)) is None and time.monotonic() < deadline:
            if task.done():
                break
            await asyncio.sleep(0.01)
        if resumed is not None:
            await asyncio.sleep(args.after)
    finally:
        stop.set()
        await task
        await nc.close()
    return producer, None if resumed is None else (resumed - kill_ns) / 1e9


async def read_all(cluster: Cluster, node: int, subject: str,
                   sub_subject: str) -> tuple[int, list[tuple[int, int]], int]:
    """From node `node`: (how many messages it says it stores, the (seq, sent_ns) of each it delivers, attempts).

    Read again while the node delivers fewer messages than it says it stores or does not answer
    (JetStream's API waits for a new meta leader; a consumer can stall after a leader change),
    for up to LEADER_TIMEOUT seconds: an acked message counts as missing only if no attempt got it.
    """
    deadline, attempt = time.monotonic() + LEADER_TIMEOUT, 0
    while True:
        attempt += 1
        nc = await nats.connect(cluster.urls[node], allow_reconnect=False, error_cb=ignore)
        try:
            target = cluster.target(nc)
            stored = await target.stored(subject)
            got, _ = await read_back(target, sub_subject, stored, "pull")
            if len(got.seqs) >= stored or time.monotonic() > deadline:
                return stored, list(zip(got.seqs, got.sent_ns)), attempt
        except (asyncio.TimeoutError, nats.errors.Error):
            if time.monotonic() > deadline:
                raise
        finally:
            await nc.close()
        await asyncio.sleep(0.5)


async def failover(cluster: Cluster, ctl, tag: str, args: argparse.Namespace) -> tuple[float, str, list[str]]:
    """Kill the leader under a producer, read back from a survivor; (kill -> first acked send in s, text, problems)."""
    subject, sub_subject = await ctl.create(tag)
    leader = await cluster.leader(ctl, tag)
    producer, seconds = await kill_under_producer(cluster, leader, subject, args)
    survivor = next(i for i in range(NODES) if i not in cluster.killed)
    problems: list[str] = []
    try:
        stored, heads, attempts = await read_all(cluster, survivor, subject, sub_subject)
    except (OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
        stored, heads, attempts = 0, [], 0
        problems.append(f"read-back from {cluster.nodes[survivor].name} failed: {type(exc).__name__}: {exc}")
    missing = set(producer.acked) - set(heads)
    unacked = set(heads) - set(producer.acked)
    if missing:
        problems.append(f"{len(missing)} of {len(producer.acked)} acked messages missing after the failover")
    if len(heads) != len(set(heads)):
        problems.append(f"{len(heads) - len(set(heads))} messages stored twice")
    if seconds is None:
        problems.append(f"no acked send within {args.failover_limit:g} s of the kill")
    failures = ", ".join(f"{n} x {kind}" for kind, n in producer.failures.most_common(4)) or "none"
    text = (f"killed {cluster.nodes[leader].name}: " + ("writes did NOT resume" if seconds is None else
            f"first acked send {seconds:.2f} s after the kill") + f"; {len(producer.acked):,} acked in all, "
            f"failed attempts: {failures}; read back {len(heads):,} of {stored:,} stored from "
            f"{cluster.nodes[survivor].name}" + (f" on read attempt {attempts}" if attempts > 1 else "")
            + f", {len(unacked)} of them unacked attempts (a retry duplicates each)")
    return float("nan") if seconds is None else seconds, text, problems


# ---------------------------------------------------------------- one cluster, one run


async def send_via_leader(cluster: Cluster, control, tag: str, count: int, in_flight: int,
                          size: int) -> tuple[int, Sent, Collector]:
    """A new mailbox / stream; `count` sends to it through the leader's node, read back there;
    (the leader's index, what the sends got, what the read-back got)."""
    subject, sub_subject = await control.create(tag)
    leader = await cluster.leader(control, tag)
    nc = await nats.connect(cluster.urls[leader], allow_reconnect=False)
    try:
        target = cluster.target(nc)
        sent = await send(nc, target, subject, count, in_flight, size)
        got, _ = await read_back(target, sub_subject, len(sent.acked), "ordered")
    finally:
        await nc.close()
    return leader, sent, got


async def bench_cluster(cluster: Cluster, run: int, args: argparse.Namespace) -> tuple[dict[str, float], list[str]]:
    """All phases against one running cluster; (figures, problems). Prints a progress line per phase."""
    label = LABELS[cluster.system]
    head = f"run {run + 1}/{args.runs} {label:<13}"
    figures: dict[str, float] = {}
    problems: list[str] = []

    def report(phase: str, text: str, issues: list[str]) -> None:
        problems.extend(f"{label} run {run + 1} {phase}: {issue}" for issue in issues)
        print(f"{head} {phase:<8}: {text}" + "".join(f"\n    PROBLEM: {i}" for i in issues), flush=True)

    ctl = await nats.connect(servers=cluster.urls, allow_reconnect=False, error_cb=ignore)
    try:
        control = cluster.target(ctl)
        await cluster.ready(control)
        for phase, count, in_flight in (("send", args.messages, args.in_flight), ("ack", args.latency_messages, 1)):
            leader, sent, got = await send_via_leader(cluster, control, f"r{run}_{phase}", count, in_flight, args.size)
            figures[phase] = len(sent.acked) / sent.elapsed
            p50, p99 = percentiles_ms(sent.latencies_ns)
            figures[f"{phase}_p50"], figures[f"{phase}_p99"] = p50, p99
            issues = sent.errors[:1] + ([f"({len(sent.errors)} errors in all)"] if len(sent.errors) > 1 else [])
            report(phase, f"{len(sent.acked):,} acked via {cluster.nodes[leader].name} (leader), x{in_flight}: "
                          f"{figures[phase]:,.0f} msg/s, ack p50 {p50:.2f} ms, p99 {p99:.2f} ms; "
                          f"read back {len(set(got.seqs)):,}", issues + got.problems(sent.acked))
        figures["failover"], text, issues = await failover(cluster, control, f"r{run}_failover", args)
        report("failover", text, issues)
    finally:
        await ctl.close()
    return figures, problems


def alternate(runs: int, workdir: Path, bench: Callable[[Cluster, int], Awaitable[tuple[dict[str, float], list[str]]]],
              results: dict[str, list[dict[str, float]]], problems: list[str],
              before_run: Callable[[int], None] = lambda run: None) -> int:
    """`runs` rounds; each starts a fresh cluster of each system in turn (the order alternating),
    runs `bench` on it and stops it, adding to `results` and `problems`. Returns 0, or the exit
    code of a server that failed to start or died unasked (its log reported)."""
    cluster: Cluster | None = None
    try:
        for run in range(runs):
            before_run(run)
            for name in (SYSTEMS if run % 2 == 0 else SYSTEMS[::-1]):
                cluster = CLUSTERS[name](workdir / f"run{run + 1}-{name}")
                cluster.start()
                figures, found = _run_loop(bench(cluster, run))
                if cluster.death():
                    raise BenchError(cluster.death())
                cluster.stop()
                results[name].append(figures)
                problems.extend(found)
    except (RuntimeError, OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
        return report_failure(cluster.unkilled() if cluster else {}, exc)
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


# ---------------------------------------------------------------- report


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    fmt: str
    higher_better: bool
    target: float | None = None  # mq9cluster's figure must be at most this (idle machine, loopback)


ROWS = (
    Row("send", "durable send, acked, x{in_flight} (msg/s)", "{:,.0f}", True),
    Row("send_p50", "  ack p50 at that load (ms)", "{:.2f}", False),
    Row("send_p99", "  ack p99 at that load (ms)", "{:.2f}", False),
    Row("ack_p50", "ack latency p50, 1 in flight (ms)", "{:.2f}", False, 10.0),
    Row("ack_p99", "ack latency p99, 1 in flight (ms)", "{:.2f}", False, 40.0),
    Row("failover", "failover: kill -> first acked send (s)", "{:.2f}", False, 3.0),
)


def print_table(results: dict[str, list[dict[str, float]]], fsyncs: list[float], args: argparse.Namespace) -> None:
    """Medians per system, their ratio, the issue's targets for mq9cluster, and the disk's fsync rate."""
    print(f"\nmedians over {len(results['mq9'])} run(s); ratio = mq9cluster R3 / JetStream R3")
    print(f"{'':<44}{'mq9cluster R3':>14}{'JetStream R3':>14}{'ratio':>8}  {'better':<7}target")
    for row in ROWS:
        mq9, js = (statistics.median(r.get(row.key, float("nan")) for r in results[name]) for name in SYSTEMS)
        ratio = mq9 / js if js else float("nan")
        target = "" if row.target is None else (f"<= {row.target:g}: " + ("met" if mq9 <= row.target else "NOT met"))
        print(f"{row.label.format(**vars(args)):<44}{row.fmt.format(mq9):>14}{row.fmt.format(js):>14}{ratio:>8.2f}  "
              f"{'higher' if row.higher_better else 'lower':<7}{target}")
    per_run = {name: ", ".join(f"{r.get('failover', float('nan')):.2f}" for r in results[name]) for name in SYSTEMS}
    print(f"failover per run (s): mq9cluster {per_run['mq9']}; JetStream {per_run['js']}")
    print(f"disk fsync rate, 4 KiB append+fdatasync: {statistics.median(fsyncs):,.0f}/s "
          f"(mq9cluster fsyncs every Raft append on each node; JetStream's file store does not per write)")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    send_options(p, DEFAULTS, QUICK)
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of acked sends before the kill (default 1)")
    p.add_argument("--after", type=float, default=1.0,
                   help="seconds the producer goes on after writes resumed (default 1)")
    p.add_argument("--retry-timeout", type=float, default=0.5,
                   help="failover producer's request timeout before it retries, seconds (default 0.5)")
    p.add_argument("--failover-limit", type=float, default=30.0,
                   help="seconds after the kill without an acked send that count as a failure (default 30)")
    p.add_argument("--keep", action="store_true", help="keep the data directories and server logs")
    args = parse_send_options(p, DEFAULTS, QUICK)
    if min(args.warmup, args.after, args.retry_timeout, args.failover_limit) <= 0:
        p.error("--warmup, --after, --retry-timeout and --failover-limit must be > 0")
    return args


def main() -> int:
    args = parse_args()
    print(f"cluster bench: {NODES} nodes per system on loopback, {args.size} B payloads; send {args.messages:,} "
          f"x{args.in_flight} in flight; ack {args.latency_messages:,} one at a time; failover after "
          f"{args.warmup:g} s (retry timeout {args.retry_timeout:g} s); {args.runs} run(s) per system")
    print(versions("nats-py"))
    print(f"machine: nproc={len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f}; "
          f"all {2 * NODES} servers share it: compare the systems within one run")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below also runs on SIGTERM
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SYSTEMS}
    fsyncs: list[float] = []
    problems: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="mq9-bench-cluster-"))
    print(f"data: {workdir} on {filesystem(workdir)}; a fresh cluster per run and system in ./runN-SYSTEM")

    def disk(run: int) -> None:
        fsyncs.append(fsync_rate(workdir))
        print(f"run {run + 1}/{args.runs} disk         : {fsyncs[-1]:,.0f} fsyncs/s", flush=True)

    try:
        failed = alternate(args.runs, workdir, lambda cluster, run: bench_cluster(cluster, run, args),
                           results, problems, disk)
        if failed:
            return failed
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    finally:
        if args.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(results, fsyncs, args)
    return conclude(problems)


if __name__ == "__main__":
    sys.exit(main())
