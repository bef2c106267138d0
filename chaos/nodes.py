"""mq9cluster node processes of a chaos run, each inside its own network namespace.

A ``Node`` is started as ``ip netns exec NS mq9cluster start ...`` (``ip`` execs the broker, so
the pid is the broker's): kill -9, SIGSTOP and SIGCONT go straight to it. Its data directory,
log and (for power-loss runs) the FUSE mount that holds the data live under the run directory.
Monitoring (``/raftz``, ``/healthz``) is read over HTTP from the client namespace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("chaos.nodes")

CLIENT_PORT = 4222
HTTP_PORT = 8222
RAFT_PORT = 7222
ROUTE_PORT = 6222
CLOCK_SHIM = Path(__file__).resolve().parent / "clockshim"


def broker_command() -> list[str]:
    """The ``mq9cluster`` console script next to this interpreter."""
    script = Path(sys.executable).parent / "mq9cluster"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mq9cluster"]


@dataclass
class Node:
    """One broker process; ``proc`` is None while it is down."""

    name: str
    ns: str
    address: str
    home: Path  # the node's directory in the run directory
    extra_args: list[str] = field(default_factory=list)
    power: bool = False  # data dir on a power-loss filesystem (see powerfs.py)
    proc: subprocess.Popen | None = None
    paused: bool = False
    starts: int = 0
    fs: subprocess.Popen | None = None  # the powerfs daemon while mounted
    clock: bool = False  # wall clock through the clock shim, set by writing ``clock_file``

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def backing_dir(self) -> Path:
        """Where the power-loss filesystem keeps the data dir's files."""
        return self.home / "backing"

    @property
    def clock_file(self) -> Path:
        """The clock shim's spec: an offset and rate such as ``+10m x1`` (see clockshim/sitecustomize.py)."""
        return self.home / "clock.spec"

    def clock_wrapper(self) -> list[str]:
        """``env`` that loads the wall-clock shim (``clockshim/sitecustomize.py``); monotonic time is left alone."""
        if not self.clock:
            return []
        if not self.clock_file.exists():
            self.clock_file.write_text("+0 x1\n")
        return ["env", f"PYTHONPATH={CLOCK_SHIM}", f"MQ9_CHAOS_CLOCK={self.clock_file.resolve()}"]

    def set_clock(self, spec: str) -> None:
        """Offset and rate of this node's wall clock from now on (read within a second)."""
        self.clock_file.write_text(spec + "\n")

    @property
    def raft_addr(self) -> str:
        return f"{self.address}:{RAFT_PORT}"

    @property
    def route_addr(self) -> str:
        return f"{self.address}:{ROUTE_PORT}"

    @property
    def url(self) -> str:
        return f"nats://{self.address}:{CLIENT_PORT}"

    @property
    def log_path(self) -> Path:
        return self.home / "node.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self, peers: list[str], routes: list[str], seed: str | None = None) -> list[str]:
        args = ["-a", self.address, "-p", str(CLIENT_PORT), "-m", str(HTTP_PORT), "--data-dir", str(self.data_dir),
                "--raft-addr", self.raft_addr, "--node-id", self.name]
        args += ["--cluster", self.route_addr, "--routes", ",".join(routes)]
        if seed is None:
            subcommand, args = "start", [*args, "--peers", ",".join(peers)]
        else:
            subcommand, args = "join", [*args, "--seed", seed]
        return ["ip", "netns", "exec", self.ns, *self.clock_wrapper(), *broker_command(), subcommand, *args,
                *self.extra_args]

    def spawn(self, peers: list[str], routes: list[str], seed: str | None = None) -> None:
        """Start the process (without waiting for it to listen); with ``seed``, as ``mq9cluster join``."""
        if self.proc is not None and self.proc.poll() is not None:
            self.proc = None  # it exited on its own; the cluster recorded that
        assert self.proc is None, f"{self.name} is running"
        self.home.mkdir(parents=True, exist_ok=True)
        if self.power:
            self.mount()
        self.starts += 1
        with self.log_path.open("ab") as out:
            out.write(f"\n==== chaos: start #{self.starts} at {time.strftime('%H:%M:%S')} ====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.command(peers, routes, seed), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.paused = False

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL and reap: no shutdown work of any kind."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.paused = False

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (after SIGCONT if paused); SIGKILL if it does not exit in time."""
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.paused = False

    # -- the power-loss filesystem -------------------------------------------------------------

    def mount(self, timeout: float = 10.0) -> None:
        """Mount the data dir through powerfs, unless it is mounted."""
        if self.fs is not None:
            return
        with (self.home / "powerfs.log").open("ab") as out:
            self.fs = subprocess.Popen(
                [sys.executable, "-m", "chaos.powerfs", str(self.backing_dir), str(self.data_dir),
                 str(self.home / "power-lost")], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.data_dir):
            if self.fs.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"powerfs did not mount {self.data_dir}: see {self.home / 'powerfs.log'}")
            time.sleep(0.02)

    def unmount(self, power_lost: bool) -> None:
        """Unmount; with ``power_lost`` every write not fsynced is undone first."""
        if self.fs is None:
            return
        assert self.proc is None, "unmount under a running node"
        if power_lost:
            (self.home / "power-lost").touch()
        deadline = time.monotonic() + 30
        while True:
            done = subprocess.run(["umount", str(self.data_dir)], check=False, capture_output=True, text=True)
            try:
                self.fs.wait(0.5 if done.returncode else 30)
                break
            except subprocess.TimeoutExpired:
                with (self.home / "powerfs.log").open("a") as out:
                    out.write(f"chaos: umount {self.data_dir}: rc {done.returncode} {done.stderr.strip()}\n")
                if time.monotonic() > deadline:
                    subprocess.run(["umount", "-l", str(self.data_dir)], check=False, capture_output=True)
                    self.fs.kill()
                    self.fs.wait()
                    raise RuntimeError(f"could not unmount {self.data_dir}: {done.stderr.strip()}")
        self.fs = None

    def power_off(self) -> None:
        """kill -9, then the disk loses whatever was not fsynced."""
        self.kill()
        self.unmount(power_lost=True)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def exited(self) -> int | None:
        """The exit code if the process ended by itself (it is then marked down)."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is not None:
            self.proc = None
        return rc

    def log_since_start(self) -> str:
        """What the process started last has logged so far."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[text.rfind("\n==== chaos: start #"):]

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    async def http_json(self, path: str, timeout: float = 1.0) -> dict | None:
        """GET a monitoring endpoint; None if the node does not answer in time."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.address, HTTP_PORT), timeout)
        except (OSError, asyncio.TimeoutError):
            return None
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            raw = await asyncio.wait_for(reader.read(), timeout)
            body = raw.split(b"\r\n\r\n", 1)[1]
            return json.loads(body)
        except (OSError, asyncio.TimeoutError, IndexError, ValueError):
            return None
        finally:
            writer.close()

    async def raftz(self) -> dict | None:
        """The node's Raft view; None while it is down, paused, or rebuilding (no Raft to ask)."""
        view = None if self.paused or not self.running else await self.http_json("/raftz")
        return view if view and "role" in view else None
