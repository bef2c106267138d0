"""Core pub/sub throughput: one publisher -> one subscriber, mq9cluster vs nats-server in the same run.

Both servers are started here on free loopback ports and driven by the same client (nats-py), with the
publisher and the subscriber in separate processes, each on its own event loop (uvloop when available).
Runs alternate between the servers so that machine noise hits both; medians and their ratio are printed.

    .venv/bin/python bench/core_pubsub.py --runs 3 --messages 100000
    .venv/bin/python bench/core_pubsub.py --profile      # plus one mq9cluster run under pyinstrument

Exits 1 if any run lost messages (or got a payload of the wrong size), 2 if a server or client process failed.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import importlib.util
import multiprocessing as mp
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

SERVERS = ("mq9", "nats")
LABELS = {"mq9": "mq9cluster", "nats": "nats-server"}
IDLE_TIMEOUT = 5.0      # subscriber gives up after this long without a new message...
FIRST_TIMEOUT = 30.0    # ...or without the first one
READY_TIMEOUT = 15.0    # seconds for a server to accept connections
PROFILE_LINES = 60


@dataclass
class RunResult:
    """Figures of one publisher/subscriber run."""

    received: int
    bad_size: int
    sub_elapsed: float
    pub_elapsed: float
    errors: list[str]

    def lost(self, messages: int) -> bool:
        return self.received < messages or self.bad_size > 0


# ---------------------------------------------------------------- client processes


def _run_loop(coro) -> object:
    """Run a coroutine on uvloop when it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def _subscribe(url: str, subject: str, messages: int, size: int, ready, out) -> None:
    import nats

    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(f"sub: {type(exc).__name__}: {exc}")

    nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False)
    state = {"count": 0, "bad": 0, "first": 0.0, "last": 0.0}
    done = asyncio.Event()

    async def on_msg(msg) -> None:
        now = time.perf_counter()
        if state["count"] == 0:
            state["first"] = now
        state["count"] += 1
        state["last"] = now
        if len(msg.data) != size:
            state["bad"] += 1
        if state["count"] >= messages:
            done.set()

    # No client-side pending limits: a loss can then only come from the server.
    await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=0, pending_bytes_limit=0)
    await nc.flush()
    ready.set()
    seen, since = 0, time.monotonic()
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), 0.5)
        except asyncio.TimeoutError:
            if state["count"] != seen:
                seen, since = state["count"], time.monotonic()
            elif time.monotonic() - since > (IDLE_TIMEOUT if seen else FIRST_TIMEOUT):
                break
    await nc.close()
    out.put(("sub", state["count"], state["bad"], state["last"] - state["first"], errors))


async def _publish(url: str, subject: str, messages: int, size: int, flush_every: int, out) -> None:
    import nats

    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(f"pub: {type(exc).__name__}: {exc}")

    nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False)
    payload = b"x" * size
    publish = nc.publish
    start = time.perf_counter()
    for i in range(1, messages + 1):
        await publish(subject, payload)
        if i % flush_every == 0:
            await nc.flush()
    await nc.flush()
    elapsed = time.perf_counter() - start
    await nc.close()
    out.put(("pub", elapsed, errors))


def _raw_connect(url: str) -> socket.socket:
    """A bare NATS connection: INFO read, CONNECT sent, PONG awaited."""
    host, port = url.removeprefix("nats://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.recv(4096)
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
    _raw_await_pong(sock)
    return sock


def _raw_await_pong(sock: socket.socket) -> None:
    seen = b""
    while b"PONG\r\n" not in seen:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        seen = seen[-8:] + chunk


def _subscribe_raw(url: str, subject: str, messages: int, size: int, ready, out) -> None:
    """Count MSG frames by bytes (every frame has the same length), no client library at all."""
    sock = _raw_connect(url)
    sock.sendall(f"SUB {subject} 1\r\nPING\r\n".encode())
    _raw_await_pong(sock)
    frame_len = len(f"MSG {subject} 1 {size}\r\n") + size + 2
    total, got, first = messages * frame_len, 0, 0.0
    sock.settimeout(IDLE_TIMEOUT)
    ready.set()
    try:
        while got < total:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            if not got:
                first = time.perf_counter()
            got += len(chunk)
    except socket.timeout:
        pass
    elapsed = time.perf_counter() - first
    bad = 0 if got % frame_len == 0 else 1
    out.put(("sub", got // frame_len, bad, elapsed, []))


def _publish_raw(url: str, subject: str, messages: int, size: int, flush_every: int, out) -> None:
    """Write pre-built PUB frames in chunks of ``flush_every``, then PING/PONG."""
    sock = _raw_connect(url)
    frame = f"PUB {subject} {size}\r\n".encode() + b"x" * size + b"\r\n"
    start = time.perf_counter()
    sent = 0
    while sent < messages:
        n = min(flush_every, messages - sent)
        sock.sendall(frame * n)
        sent += n
    sock.sendall(b"PING\r\n")
    _raw_await_pong(sock)
    out.put(("pub", time.perf_counter() - start, []))


def _subscriber_main(client: str, *args) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business; it ends us
    _subscribe_raw(*args) if client == "raw" else _run_loop(_subscribe(*args))


def _publisher_main(client: str, *args) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _publish_raw(*args) if client == "raw" else _run_loop(_publish(*args))


def measure(port: int, subject: str, args: argparse.Namespace) -> RunResult:
    """Run one subscriber process and one publisher process against the server on `port`."""
    ctx = mp.get_context("spawn")
    url = f"nats://127.0.0.1:{port}"
    ready, out = ctx.Event(), ctx.Queue()
    sub = ctx.Process(name="subscriber", target=_subscriber_main,
                      args=(args.client, url, subject, args.messages, args.size, ready, out))
    pub = ctx.Process(name="publisher", target=_publisher_main,
                      args=(args.client, url, subject, args.messages, args.size, args.flush_every, out))
    procs = []
    try:
        sub.start()
        procs.append(sub)
        if not ready.wait(READY_TIMEOUT):
            raise RuntimeError("subscriber did not get ready")
        pub.start()
        procs.append(pub)
        results = {}
        deadline = time.monotonic() + FIRST_TIMEOUT + IDLE_TIMEOUT + args.messages / 1000
        while len(results) < 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"client processes timed out (got {sorted(results)})")
            try:
                item = out.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                dead = [p.name for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"client process failed: {', '.join(dead)}") from None
                continue
            results[item[0]] = item[1:]
        received, bad, sub_elapsed, sub_errors = results["sub"]
        pub_elapsed, pub_errors = results["pub"]
        for p in procs:
            p.join(5)
        return RunResult(received, bad, sub_elapsed, pub_elapsed, pub_errors + sub_errors)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()


# ---------------------------------------------------------------- servers


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together while choosing them)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if this script dies without stopping the server (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Server:
    """One broker subprocess with its stderr in a log file."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path) -> None:
        self.name, self.argv, self.port, self.log_path = name, argv, port, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            # Own session: Ctrl-C reaches only this script, which then stops the server itself.
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.death())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} not listening on port {self.port} after {READY_TIMEOUT:.0f} s; "
                           f"log tail:\n{self.log_tail()}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, no shutdown work of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def death(self) -> str:
        """Empty while running, else how it ended and the end of its log."""
        if self.proc is None or self.proc.poll() is None:
            return ""
        return f"{self.name} exited with {self.proc.returncode}; log tail:\n{self.log_tail()}"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def report_failure(servers: dict[str, "Server"], exc: BaseException) -> int:
    """Print what failed (and any server that died without saying so); the exit code 2."""
    print(f"\nerror: {exc}")
    for server in servers.values():
        if server.death() and server.death() not in str(exc):
            print(server.death())
    return 2


def mq9_argv(port: int, data_dir: Path, profile_out: Path | None = None, *, http_port: int = 0,
             raft_port: int | None = None) -> list[str]:
    """mq9cluster on loopback `port`; monitoring off unless `http_port`; Raft on `raft_port` (default: a free one)."""
    if raft_port is None:
        (raft_port,) = free_ports(1)
    cmd = ["-m", "mq9cluster", "start", "-a", "127.0.0.1", "-p", str(port), "-m", str(http_port),
           "--data-dir", str(data_dir), "--raft-addr", f"127.0.0.1:{raft_port}"]
    if profile_out is None:
        return [sys.executable, *cmd]
    return [sys.executable, "-m", "pyinstrument", "-o", str(profile_out), "-r", "text", *cmd]


def nats_argv(port: int) -> list[str]:
    return ["nats-server", "-a", "127.0.0.1", "-p", str(port)]


# ---------------------------------------------------------------- report


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def describe(result: RunResult, args: argparse.Namespace) -> str:
    sub_rate = rate(args.messages, result.sub_elapsed)
    text = (f"sub {sub_rate:>10,.0f} msg/s ({sub_rate * args.size / 1e6:6.1f} MB/s, {result.sub_elapsed:6.3f} s)  "
            f"pub {rate(args.messages, result.pub_elapsed):>10,.0f} msg/s  "
            f"received {result.received}/{args.messages}")
    if result.bad_size:
        text += f", {result.bad_size} with wrong payload size"
    if result.lost(args.messages):
        text += "  LOSS"
    for err in result.errors[:5]:
        text += f"\n      {err}"
    return text


def versions(client: str) -> str:
    try:
        nats_py = metadata.version("nats-py")
    except metadata.PackageNotFoundError:
        nats_py = "?"
    try:
        nats_server = subprocess.run(["nats-server", "--version"], capture_output=True, text=True,
                                     timeout=5).stdout.strip()
    except OSError:
        nats_server = "nats-server not found"
    uv = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio (no uvloop)"
    who = "raw sockets, pre-built frames" if client == "raw" else f"nats-py {nats_py} on {uv}"
    return f"client {who}; {nats_server}; python {sys.version.split()[0]}"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=200_000, help="messages per run (default 200000)")
    p.add_argument("--size", type=int, default=128, help="payload bytes (default 128)")
    p.add_argument("--runs", type=int, default=5, help="runs per server, alternating servers (default 5)")
    p.add_argument("--flush-every", type=int, default=1000,
                   help="publisher awaits flush() every N messages (default 1000)")
    p.add_argument("--client", choices=("nats-py", "raw"), default="nats-py",
                   help="nats-py (the same real client for both servers), or raw sockets with pre-built "
                        "frames, which takes the client out of the measurement (default nats-py)")
    p.add_argument("--server-only", choices=SERVERS, help="benchmark only this server")
    p.add_argument("--profile", action="store_true",
                   help="after the measured runs, one extra mq9cluster run under pyinstrument; prints the report")
    args = p.parse_args()
    if args.messages < 1 or args.runs < 1 or args.size < 0 or args.flush_every < 1:
        p.error("--messages, --runs and --flush-every must be >= 1, --size >= 0")
    if args.profile and args.server_only == "nats":
        p.error("--profile profiles mq9cluster; it cannot be combined with --server-only nats")
    if args.profile and importlib.util.find_spec("pyinstrument") is None:
        p.error(f"--profile needs pyinstrument: {sys.executable} -m pip install pyinstrument")
    return args


def profile_run(args: argparse.Namespace, workdir: Path) -> bool:
    """One mq9cluster run under pyinstrument (not in the medians); print the report's top; True on loss."""
    report = Path(tempfile.mkdtemp(prefix="mq9cluster-profile-")) / "core_pubsub.txt"
    (port,) = free_ports(1)
    server = Server("mq9cluster (pyinstrument)", mq9_argv(port, workdir / "data-profile", report), port,
                    workdir / "mq9-profile.log")
    print("profile: mq9cluster under pyinstrument ... ", end="", flush=True)
    try:
        server.start()
        result = measure(port, "bench.core.profile", args)
    except RuntimeError as exc:
        if server.death() and server.death() not in str(exc):
            raise RuntimeError(f"{exc}\n{server.death()}") from None
        raise
    finally:
        server.stop(timeout=60)  # pyinstrument renders the report after the server's graceful exit
    print(describe(result, args))
    if not report.exists():
        print(f"profile: no report written; server log tail:\n{server.log_tail()}")
    else:
        print(f"profile report: {report}")
        print("\n".join(report.read_text(errors="replace").splitlines()[:PROFILE_LINES]))
    return result.lost(args.messages)


def main() -> int:
    args = parse_args()
    selected = [args.server_only] if args.server_only else list(SERVERS)
    print(f"core pub/sub: 1 publisher -> 1 subscriber (separate processes), {args.messages} msgs x {args.size} B, "
          f"{args.runs} run(s) per server, flush every {args.flush_every}")
    print(versions(args.client))
    print(f"machine: nproc={len(os.sched_getaffinity(0))}; NOTE: the machine is shared and noisy, so compare "
          f"the two servers within one run of this script, not absolute figures across runs")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below also runs on SIGTERM
    results: dict[str, list[RunResult]] = {name: [] for name in selected}
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory(prefix="mq9-bench-") as tmp:
        workdir = Path(tmp)
        try:
            ports = dict(zip(selected, free_ports(len(selected))))
            for name in selected:
                argv = mq9_argv(ports[name], workdir / "data") if name == "mq9" else nats_argv(ports[name])
                servers[name] = Server(LABELS[name], argv, ports[name], workdir / f"{name}.log")
                servers[name].start()
            print("servers: " + ", ".join(f"{LABELS[n]} on 127.0.0.1:{ports[n]}" for n in selected))
            for run in range(args.runs):
                order = selected if run % 2 == 0 else selected[::-1]
                for name in order:
                    print(f"run {run + 1}/{args.runs} {LABELS[name]:<11}: ", end="", flush=True)
                    result = measure(ports[name], f"bench.core.{name}.{run}", args)
                    results[name].append(result)
                    print(describe(result, args), flush=True)
                    if servers[name].death():
                        raise RuntimeError(servers[name].death())
        except RuntimeError as exc:
            return report_failure(servers, exc)
        except KeyboardInterrupt:
            print("\ninterrupted")
            return 130
        finally:
            for server in servers.values():
                server.stop()

        print()
        medians = {}
        for name in selected:
            sub_rates = [rate(args.messages, r.sub_elapsed) for r in results[name]]
            pub_rates = [rate(args.messages, r.pub_elapsed) for r in results[name]]
            medians[name] = statistics.median(sub_rates)
            print(f"median {LABELS[name]:<11}: sub {medians[name]:>10,.0f} msg/s  "
                  f"pub {statistics.median(pub_rates):>10,.0f} msg/s  "
                  f"(sub runs: {', '.join(f'{r:,.0f}' for r in sub_rates)})")
        if len(selected) == 2:
            ratio = medians["mq9"] / medians["nats"] if medians["nats"] else float("nan")
            print(f"ratio mq9cluster / nats-server (median subscriber rate): {ratio:.3f}")
        lossy = [f"{LABELS[n]} run {i + 1}" for n in selected
                 for i, r in enumerate(results[n]) if r.lost(args.messages)]
        if lossy:
            print(f"LOSS in: {', '.join(lossy)}")

        if args.profile:
            print()
            try:
                if profile_run(args, workdir):
                    lossy.append("profiled run")
            except RuntimeError as exc:
                print(f"\nerror: {exc}")
                return 2
            except KeyboardInterrupt:
                print("\ninterrupted")
                return 130
    return 1 if lossy else 0


if __name__ == "__main__":
    sys.exit(main())
