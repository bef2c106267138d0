"""Durable mailbox sends and replay: mq9cluster vs nats-server JetStream R1 (file store) in the same run.

Both servers are started here on free loopback ports, their data directories under one temporary
directory (so on one filesystem), and driven by the same client (nats-py, one connection, uvloop when
available). mq9cluster gets mailboxes (`$mq9.AI.MAILBOX.{addr}`, acked once committed and fsynced);
JetStream gets one file-stored R1 stream per phase (acked by a PubAck, no fsync per write). Per server
and run, each phase on a fresh mailbox / stream:

  send     durable sends with acks, --in-flight concurrent requests: msgs/s (then read back and checked)
  ack      one request in flight: ack latency p50/p99 (then read back and checked)
  live     a live subscriber (mq9 subscription / JetStream ordered push consumer): publish->delivery p50/p99
  backlog  store --backlog messages, then one subscriber gets them all: msgs/s from subscribe to last message

plus the disk's fsync rate (append 4 KiB + fdatasync, ~1 s) in the same filesystem. Runs alternate the
servers; medians and ratios mq9cluster / JetStream are printed.

    .venv/bin/python bench/mailbox.py              # 3 runs, about a minute here
    .venv/bin/python bench/mailbox.py --quick      # smoke run

Exits 1 if an error reply (or request failure) came back or an acked message was missing or duplicated
on read-back, 2 if a server failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, StorageType

from core_pubsub import (
    FIRST_TIMEOUT, IDLE_TIMEOUT, Server, _run_loop, free_ports, mq9_argv, nats_argv, report_failure, versions,
)

SERVERS = ("mq9", "js")
LABELS = {"mq9": "mq9cluster", "js": "JetStream R1"}
HEAD = struct.Struct("<QQ")  # payload head: sequence number, perf_counter_ns at send
REQUEST_TIMEOUT = 30.0
FSYNC_SECONDS = 1.0
PULL_BATCH = 1000
DEFAULTS = {"messages": 20_000, "latency_messages": 2_000, "backlog": 100_000, "runs": 3}
QUICK = {"messages": 2_000, "latency_messages": 500, "backlog": 10_000, "runs": 1}

OnMsg = Callable[[object], Awaitable[None]]



def ack_problem(data: bytes, id_key: str) -> str | None:
    """None when ``data`` is a JSON ack with an integer ``id_key`` and no error, else why not."""
    try:
        reply = json.loads(data)
    except ValueError:
        return f"not JSON: {data[:200]!r}"
    return None if "error" not in reply and isinstance(reply.get(id_key), int) else str(reply)

class BenchError(RuntimeError):
    """A server did not do what the benchmark needs (setup failed, not ready)."""


# ---------------------------------------------------------------- the two servers, as the client sees them


class Mq9:
    """mq9cluster: one private mailbox per phase."""

    def __init__(self, nc) -> None:
        self.nc = nc

    async def ready(self) -> None:
        """Wait until a CREATE succeeds (the one-node Raft group has elected itself)."""
        deadline = time.monotonic() + 30
        last = ""
        while time.monotonic() < deadline:
            try:
                reply = await self.nc.request("$mq9.AI.MAILBOX.CREATE", b"{}", timeout=1)
                if "error" not in json.loads(reply.data):
                    return
                last = reply.data.decode(errors="replace")
            except Exception as exc:  # noqa: BLE001 - any failure here means "not yet"
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.1)
        raise BenchError(f"mq9cluster: no successful CREATE within 30 s (last: {last})")

    async def create(self, tag: str) -> tuple[str, str]:
        """A new mailbox: (send subject, subscribe subject)."""
        reply = json.loads((await self.nc.request("$mq9.AI.MAILBOX.CREATE", b"{}", timeout=REQUEST_TIMEOUT)).data)
        if "error" in reply:
            raise BenchError(f"mq9cluster CREATE failed: {reply}")
        address = reply["mail_address"]
        return f"$mq9.AI.MAILBOX.{address}", f"$mq9.AI.MAILBOX.{address}.*"

    @staticmethod
    def ack_error(data: bytes) -> str | None:
        """None for `{"msg_id": N}`, else the reply as text."""
        return ack_problem(data, "msg_id")

    async def stored(self, subject: str) -> int:
        """How many messages the mailbox sent to on `subject` holds (its LIST)."""
        address = subject.removeprefix("$mq9.AI.MAILBOX.")
        reply = json.loads((await self.nc.request(f"$mq9.AI.MAILBOX.LIST.{address}", b"",
                                                  timeout=REQUEST_TIMEOUT)).data)
        if "error" in reply:
            raise BenchError(f"mq9cluster LIST failed: {reply}")
        return len(reply["messages"])

    async def subscribe(self, subject: str, on_msg: OnMsg, mode: str) -> Callable[[], Awaitable[None]]:
        """Subscribe to the mailbox: stored messages first, then live ones; returns the unsubscriber."""
        sub = await self.nc.subscribe(subject, cb=on_msg, pending_msgs_limit=0, pending_bytes_limit=0)
        return sub.unsubscribe


class JetStream:
    """nats-server JetStream: one file-stored stream per phase, R1 unless `replicas` says otherwise."""

    def __init__(self, nc, replicas: int = 1) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.replicas = replicas

    async def ready(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                await self.js.account_info()
                return
            except Exception as exc:  # noqa: BLE001
                if time.monotonic() > deadline:
                    raise BenchError(f"JetStream not available within 30 s: {exc}") from None
                await asyncio.sleep(0.1)

    @staticmethod
    def stream(tag: str) -> str:
        """The name of phase `tag`'s stream."""
        return f"BENCH_{tag}"

    async def create(self, tag: str) -> tuple[str, str]:
        subject = f"bench.{tag}"
        await self.js.add_stream(name=self.stream(tag), subjects=[subject], storage=StorageType.FILE,
                                 num_replicas=self.replicas)
        return subject, subject

    @staticmethod
    def ack_error(data: bytes) -> str | None:
        """None for a PubAck `{"stream": S, "seq": N}`, else the reply as text."""
        return ack_problem(data, "seq")

    async def stored(self, subject: str) -> int:
        """How many messages the stream capturing `subject` holds."""
        info = await self.js.stream_info(await self.js.find_stream_name_by_subject(subject))
        return info.state.messages

    async def subscribe(self, subject: str, on_msg: OnMsg, mode: str) -> Callable[[], Awaitable[None]]:
        """Deliver the whole stream, then live messages: an ordered push consumer, or pull fetches."""
        if mode == "ordered":
            sub = await self.js.subscribe(subject, cb=on_msg, ordered_consumer=True,
                                          pending_msgs_limit=0, pending_bytes_limit=0)
            return sub.unsubscribe
        psub = await self.js.pull_subscribe(subject, config=ConsumerConfig(ack_policy=AckPolicy.NONE),
                                            pending_msgs_limit=0, pending_bytes_limit=0)

        async def pull() -> None:
            while True:
                try:
                    msgs = await psub.fetch(PULL_BATCH, timeout=IDLE_TIMEOUT)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    await on_msg(msg)

        task = asyncio.create_task(pull())

        async def stop() -> None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await psub.unsubscribe()

        return stop


# ---------------------------------------------------------------- measurements


@dataclass
class Sent:
    """What a batch of requests got back."""

    acked: list[int] = field(default_factory=list)  # sequence numbers of acked messages
    latencies_ns: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0


class Collector:
    """Sequence numbers, publish->delivery latencies and arrival time of a subscription's messages."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seqs: list[int] = []
        self.sent_ns: list[int] = []  # each message's send timestamp: with its seq, which attempt was stored
        self.latencies_ns: list[int] = []
        self.last = 0.0
        self.done = asyncio.Event()
        if expected <= 0:
            self.done.set()

    async def on_msg(self, msg) -> None:
        now = time.perf_counter_ns()
        seq, sent_ns = HEAD.unpack_from(msg.data)
        self.seqs.append(seq)
        self.sent_ns.append(sent_ns)
        self.latencies_ns.append(now - sent_ns)
        self.last = now / 1e9
        if len(self.seqs) >= self.expected:
            self.done.set()

    async def wait(self) -> None:
        """Until all expected messages arrived, or none came for IDLE_TIMEOUT (FIRST_TIMEOUT before the first)."""
        seen, since = 0, time.monotonic()
        while not self.done.is_set():
            try:
                await asyncio.wait_for(self.done.wait(), 0.5)
            except asyncio.TimeoutError:
                if len(self.seqs) != seen:
                    seen, since = len(self.seqs), time.monotonic()
                elif time.monotonic() - since > (IDLE_TIMEOUT if seen else FIRST_TIMEOUT):
                    return

    def problems(self, acked: list[int]) -> list[str]:
        """Acked messages that did not arrive, and duplicates."""
        got = set(self.seqs)
        missing = len(set(acked) - got)
        out = [f"{missing} of {len(acked)} acked messages missing"] if missing else []
        if len(self.seqs) != len(got):
            out.append(f"{len(self.seqs) - len(got)} duplicate deliveries")
        return out


async def send(nc, target, subject: str, count: int, in_flight: int, size: int) -> Sent:
    """`count` requests to `subject`, `in_flight` at a time; each reply checked as an ack."""
    result = Sent()
    pad = b"x" * (size - HEAD.size)
    seqs = iter(range(count))

    async def worker() -> None:
        for seq in seqs:
            start = time.perf_counter_ns()
            try:
                reply = await nc.request(subject, HEAD.pack(seq, start) + pad, timeout=REQUEST_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - a failed request is a result, not a crash
                result.errors.append(f"request failed: {type(exc).__name__}: {exc}")
                continue
            result.latencies_ns.append(time.perf_counter_ns() - start)
            error = target.ack_error(reply.data)
            if error is None:
                result.acked.append(seq)
            else:
                result.errors.append(f"error reply: {error}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    result.elapsed = time.perf_counter() - start
    return result


async def read_back(target, subject: str, expected: int, mode: str) -> tuple[Collector, float]:
    """Subscribe and collect until `expected` messages arrived; (collector, subscribe->last message seconds)."""
    collector = Collector(expected)
    start = time.perf_counter()
    stop = await target.subscribe(subject, collector.on_msg, mode)
    await collector.wait()
    await stop()
    return collector, (collector.last - start if collector.seqs else 0.0)


def percentiles_ms(values_ns: list[int]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    if len(values_ns) < 2:
        return (values_ns[0] / 1e6, values_ns[0] / 1e6) if values_ns else (float("nan"), float("nan"))
    q = statistics.quantiles(values_ns, n=100, method="inclusive")
    return q[49] / 1e6, q[98] / 1e6


def fsync_rate(directory: Path, seconds: float = FSYNC_SECONDS) -> float:
    """Appends of 4 KiB, each followed by fdatasync, per second (a non-batching journal's ceiling)."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block, count = b"\0" * 4096, 0
    try:
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            os.write(fd, block)
            os.fdatasync(fd)
            count += 1
    finally:
        os.close(fd)
        path.unlink()
    return count / elapsed


def filesystem(path: Path) -> str:
    """Mount point, device and type of the filesystem holding `path` (from /proc/self/mounts)."""
    path, best = path.resolve(), None
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                device, mount, fstype = line.split()[:3]
                if path.is_relative_to(mount) and (best is None or len(mount) > len(best[0])):
                    best = (mount, device, fstype)
    except OSError:
        pass
    return f"{best[0]} ({best[1]}, {best[2]})" if best else "an unknown filesystem"


# ---------------------------------------------------------------- one server, one run


async def bench_server(name: str, port: int, run: int, args: argparse.Namespace) -> tuple[dict[str, float], list[str]]:
    """All phases against one server; (figures, problems). Prints a progress line per phase."""
    problems: list[str] = []

    async def on_error(exc: Exception) -> None:
        problems.append(f"connection error: {type(exc).__name__}: {exc}")

    nc = await nats.connect(f"nats://127.0.0.1:{port}", error_cb=on_error, allow_reconnect=False)
    target = Mq9(nc) if name == "mq9" else JetStream(nc)
    head = f"run {run + 1}/{args.runs} {LABELS[name]:<12}"
    figures: dict[str, float] = {}

    def report(phase: str, text: str, sent: Sent, got: Collector) -> None:
        issues = sent.errors[:1] + got.problems(sent.acked)
        if len(sent.errors) > 1:
            issues.append(f"({len(sent.errors)} errors in all)")
        problems.extend(f"{LABELS[name]} run {run + 1} {phase}: {issue}" for issue in issues)
        print(f"{head} {phase:<8}: {text}" + ("".join(f"\n    PROBLEM: {i}" for i in issues)), flush=True)

    try:
        await target.ready()
        tag = f"r{run}"

        subject, sub_subject = await target.create(f"{tag}_send")
        sent = await send(nc, target, subject, args.messages, args.in_flight, args.size)
        got, _ = await read_back(target, sub_subject, len(sent.acked), "ordered")
        figures["send"] = len(sent.acked) / sent.elapsed
        p50, p99 = percentiles_ms(sent.latencies_ns)
        report("send", f"{len(sent.acked):,} acked in {sent.elapsed:.2f} s = {figures['send']:>9,.0f} msg/s "
                       f"(x{args.in_flight}; ack p50 {p50:.1f} ms, p99 {p99:.1f} ms); "
                       f"read back {len(set(got.seqs)):,}", sent, got)

        subject, sub_subject = await target.create(f"{tag}_ack")
        sent = await send(nc, target, subject, args.latency_messages, 1, args.size)
        got, _ = await read_back(target, sub_subject, len(sent.acked), "ordered")
        figures["ack_p50"], figures["ack_p99"] = percentiles_ms(sent.latencies_ns)
        report("ack", f"{len(sent.acked):,} acked one at a time: p50 {figures['ack_p50']:.2f} ms, "
                      f"p99 {figures['ack_p99']:.2f} ms; read back {len(set(got.seqs)):,}", sent, got)

        subject, sub_subject = await target.create(f"{tag}_live")
        got = Collector(args.latency_messages)
        stop = await target.subscribe(sub_subject, got.on_msg, "ordered")
        await nc.flush()
        sent = await send(nc, target, subject, args.latency_messages, 1, args.size)
        got.expected = len(sent.acked)
        if len(got.seqs) >= got.expected:
            got.done.set()
        await got.wait()
        await stop()
        figures["live_p50"], figures["live_p99"] = percentiles_ms(got.latencies_ns)
        report("live", f"{len(set(got.seqs)):,}/{len(sent.acked):,} delivered live: publish->delivery "
                       f"p50 {figures['live_p50']:.2f} ms, p99 {figures['live_p99']:.2f} ms", sent, got)

        subject, sub_subject = await target.create(f"{tag}_backlog")
        print(f"{head} backlog : storing {args.backlog:,} ... ", end="", flush=True)
        sent = await send(nc, target, subject, args.backlog, args.in_flight, args.size)
        figures["fill"] = len(sent.acked) / sent.elapsed
        print(f"{figures['fill']:,.0f} msg/s; replaying", flush=True)
        got, elapsed = await read_back(target, sub_subject, len(sent.acked), args.js_replay)
        figures["replay"] = len(got.seqs) / elapsed if elapsed > 0 else 0.0
        report("backlog", f"{len(set(got.seqs)):,}/{len(sent.acked):,} replayed in {elapsed:.2f} s = "
                          f"{figures['replay']:>9,.0f} msg/s", sent, got)
    finally:
        await nc.close()
    return figures, problems


# ---------------------------------------------------------------- report


ROWS = (  # key, label, unit format, higher is better
    ("send", "durable send, acked, x{in_flight} (msg/s)", "{:,.0f}", True),
    ("ack_p50", "ack latency p50, 1 in flight (ms)", "{:.2f}", False),
    ("ack_p99", "ack latency p99, 1 in flight (ms)", "{:.2f}", False),
    ("live_p50", "publish->delivery p50 (ms)", "{:.2f}", False),
    ("live_p99", "publish->delivery p99 (ms)", "{:.2f}", False),
    ("replay", "replay of {backlog:,} stored (msg/s)", "{:,.0f}", True),
    ("fill", "backlog fill, acked, x{in_flight} (msg/s)", "{:,.0f}", True),
)


def print_table(results: dict[str, list[dict[str, float]]], fsyncs: list[float], args: argparse.Namespace) -> None:
    """Medians per server, their ratio, and the disk's fsync rate."""
    replay = "ordered push consumer" if args.js_replay == "ordered" else f"pull fetch, batches of {PULL_BATCH}"
    print(f"\nmedians over {len(results['mq9'])} run(s); ratio = mq9cluster / JetStream R1; JetStream replay: {replay}")
    print(f"{'':<44}{'mq9cluster':>12}{'JetStream R1':>14}{'ratio':>8}  better")
    medians = {}
    for key, label, fmt, higher in ROWS:
        mq9, js = (statistics.median(r[key] for r in results[n]) for n in SERVERS)
        medians[key] = mq9
        ratio = mq9 / js if js else float("nan")
        print(f"{label.format(**vars(args)):<44}{fmt.format(mq9):>12}{fmt.format(js):>14}{ratio:>8.2f}  "
              f"{'higher' if higher else 'lower'}")
    fsync = statistics.median(fsyncs)
    print(f"{'disk fsync rate, 4 KiB append+fdatasync (/s)':<44}{fsync:>12,.0f}   "
          f"(mq9cluster durable sends per fsync: {medians['send'] / fsync:.1f})")


def send_options(p: argparse.ArgumentParser, defaults: dict[str, int], quick: dict[str, int]) -> None:
    """The options of every durable-send benchmark (this one, cluster.py); `parse_send_options` fills them."""
    p.add_argument("--messages", type=int, help=f"sends in the throughput phase (default {defaults['messages']})")
    p.add_argument("--latency-messages", type=int,
                   help=f"sends in each one-in-flight phase (default {defaults['latency_messages']})")
    p.add_argument("--runs", type=int, help=f"runs per server, alternating servers (default {defaults['runs']})")
    p.add_argument("--size", type=int, default=128, help=f"payload bytes, >= {HEAD.size} (default 128)")
    p.add_argument("--in-flight", type=int, default=256, help="concurrent requests when sending in bulk (default 256)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in quick.items()))


def parse_send_options(p: argparse.ArgumentParser, defaults: dict[str, int],
                       quick: dict[str, int]) -> argparse.Namespace:
    """Parse; counts not given come from `quick` under --quick, else from `defaults`; all must be >= 1."""
    args = p.parse_args()
    for key, value in (quick if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    counts = [*defaults, "in_flight"]
    if min(getattr(args, key) for key in counts) < 1:
        p.error(", ".join(f"--{key.replace('_', '-')}" for key in counts) + " must be >= 1")
    if args.size < HEAD.size:
        p.error(f"--size must be >= {HEAD.size} (sequence number and timestamp)")
    return args


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    send_options(p, DEFAULTS, QUICK)
    p.add_argument("--backlog", type=int, help=f"messages stored before the replay (default {DEFAULTS['backlog']})")
    p.add_argument("--js-replay", choices=("ordered", "pull"), default="ordered",
                   help=f"JetStream replay consumer: ordered push consumer, or pull fetches of {PULL_BATCH} "
                        "(default ordered)")
    return parse_send_options(p, DEFAULTS, QUICK)


def conclude(problems: list[str]) -> int:
    """Print the problems (the first 20 of them); the exit code: 1 if there were any, else 0."""
    if not problems:
        return 0
    print(f"\nPROBLEMS ({len(problems)}):")
    for problem in problems[:20]:
        print(f"  {problem}")
    return 1


def main() -> int:
    args = parse_args()
    print(f"mailbox bench: {args.size} B payloads; send {args.messages:,} x{args.in_flight} in flight; "
          f"ack/live {args.latency_messages:,} one at a time; backlog {args.backlog:,}; {args.runs} run(s) per server")
    print(versions("nats-py"))
    print(f"machine: nproc={len(os.sched_getaffinity(0))}; shared and noisy: compare the servers within one run")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below also runs on SIGTERM
    results: dict[str, list[dict[str, float]]] = {name: [] for name in SERVERS}
    fsyncs: list[float] = []
    problems: list[str] = []
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="mq9-bench-mailbox-") as tmp:
        workdir = Path(tmp)
        print(f"data: {workdir} on {filesystem(workdir)}; mq9cluster in ./mq9-data, JetStream in ./js-data")
        try:
            ports = dict(zip(SERVERS, free_ports(len(SERVERS))))
            argv = {"mq9": mq9_argv(ports["mq9"], workdir / "mq9-data"),
                    "js": nats_argv(ports["js"]) + ["-js", "-sd", str(workdir / "js-data")]}
            for name in SERVERS:
                servers[name] = Server(LABELS[name], argv[name], ports[name], workdir / f"{name}.log")
                servers[name].start()
            print("servers: " + ", ".join(f"{LABELS[n]} on 127.0.0.1:{ports[n]}" for n in SERVERS))
            for run in range(args.runs):
                fsyncs.append(fsync_rate(workdir))
                print(f"run {run + 1}/{args.runs} disk         : {fsyncs[-1]:,.0f} fsyncs/s", flush=True)
                for name in (SERVERS if run % 2 == 0 else SERVERS[::-1]):
                    figures, found = _run_loop(bench_server(name, ports[name], run, args))
                    results[name].append(figures)
                    problems.extend(found)
                    if servers[name].death():
                        raise BenchError(servers[name].death())
        except (RuntimeError, OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
            return report_failure(servers, exc)
        except KeyboardInterrupt:
            print("\ninterrupted")
            return 130
        finally:
            for server in servers.values():
                server.stop()
    print_table(results, fsyncs, args)
    return conclude(problems)


if __name__ == "__main__":
    sys.exit(main())
