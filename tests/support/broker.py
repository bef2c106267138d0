"""Real broker processes for tests: Debian's nats-server or mq9cluster, on free loopback ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

INSTALL_HINT = "install the test dependencies with scripts/install-test-deps.sh (make test does)"
START_TIMEOUT = 5.0


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port that was free a moment ago and that this process never handed out before.

    The kernel may give the same port to two bind-to-0 probes in a row (the first was closed at
    once): a cluster's nine ports are picked before any node binds, so repeats are refused here.
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def nats_server_binary() -> str:
    """Debian installs nats-server to /usr/sbin, which is not on every user's PATH."""
    path = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        pytest.fail(f"nats-server is not installed: {INSTALL_HINT}")
    return path


def mq9cluster_command() -> list[str]:
    """The console script next to this interpreter, or ``python -m mq9cluster``."""
    script = Path(sys.executable).parent / "mq9cluster"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mq9cluster"]


class Broker:
    """A broker process on fixed loopback ports; ``restart()`` brings it back on the same ports."""

    def __init__(self, kind: str, workdir: Path, extra_args: list[str] | None = None,
                 subcommand: str = "start") -> None:
        self.kind = kind
        self.subcommand = subcommand
        self.port = free_port()
        self.http_port = free_port()
        self.raft_port = free_port()
        self.cluster_port = free_port()  # used only when extra_args pass --cluster cluster_addr
        self.url = f"nats://127.0.0.1:{self.port}"
        self.raft_addr = f"127.0.0.1:{self.raft_port}"
        self.cluster_addr = f"127.0.0.1:{self.cluster_port}"
        self.extra_args = list(extra_args or [])
        self.env: dict[str, str] = {}  # set before start(): added to the process's environment
        self.workdir = workdir
        self.log_path = workdir / f"{kind}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        ports = ["-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.http_port)]
        if self.kind == "nats-server":
            return [nats_server_binary(), *ports, *self.extra_args]
        node = ["--data-dir", str(self.data_dir), "--raft-addr", f"127.0.0.1:{self.raft_port}"]
        return [*mq9cluster_command(), self.subcommand, *ports, *node, *self.extra_args]

    @property
    def data_dir(self) -> Path:
        return self.workdir / f"data-{self.port}"

    def spawn(self) -> "Broker":
        """Start the process without waiting for it to listen."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                env={**os.environ, **self.env} if self.env else None,
            )
        return self

    def start(self) -> "Broker":
        """Start the process and wait until its client port accepts connections."""
        self.spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                pytest.fail(f"{self.kind} exited with {rc} before listening on {self.port}:\n{self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"{self.kind} not listening on {self.port} after {START_TIMEOUT} s:\n{self.output()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Terminate the process (SIGKILL if it does not exit within 3 s)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the process: no shutdown work of any kind."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its exit code."""
        assert self.proc is not None
        rc = self.proc.wait(timeout)
        self.proc = None
        return rc

    def http_json(self, path: str) -> dict:
        """GET a monitoring endpoint and decode its JSON."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as response:
            return json.loads(response.read())

    def output(self) -> str:
        """The process's combined output so far (last 8000 characters)."""
        return self.log_path.read_text(errors="replace")[-8000:] if self.log_path.exists() else ""
