"""Interop fixtures: real broker processes (nats-server, mq9cluster) and the nats.js/libnats drivers.

Every test that takes `scenario` runs once per entry of SCENARIOS; every test that takes `server`
runs once per broker kind. Missing tools fail loudly (CI installs them with
scripts/install-test-deps.sh), they never skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.broker import INSTALL_HINT, Broker

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
C_SOURCE = HERE / "c" / "scenarios.c"
DRIVER_TIMEOUT = 30.0

SCENARIOS = (
    "connect",
    "pubsub",
    "wildcard",
    "queue",
    "request",
    "headers",
    "no_responders",
    "autounsub",
    "reconnect",
    "drain",
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scenario" in metafunc.fixturenames:
        metafunc.parametrize("scenario", SCENARIOS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Records each phase's report on the item so fixtures can tell whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(params=("nats-server", "mq9cluster"))
def server(request: pytest.FixtureRequest, tmp_path: Path):
    """A started broker of each kind (.url, .port, .kind, .restart()); its output is shown on failure."""
    broker = Broker(request.param, tmp_path)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- {broker.kind} output ---\n{broker.output()}")


@pytest.fixture(params=("nats-server", "mq9cluster"))
def mesh(request: pytest.FixtureRequest, tmp_path: Path):
    """Two brokers of each kind joined by a route (both take nats-server's --cluster/--routes)."""
    nodes = [Broker(request.param, tmp_path) for _ in range(2)]
    for node, other in zip(nodes, reversed(nodes)):
        node.extra_args = ["--cluster", f"nats://{node.cluster_addr}", "--routes", f"nats://{other.cluster_addr}"]
        if node.kind == "nats-server":
            node.extra_args += ["--cluster_name", "interop"]
    try:
        for node in nodes:
            node.start()
        deadline = time.monotonic() + 10
        while any(node.http_json("/routez")["num_routes"] != 1 for node in nodes):
            assert time.monotonic() < deadline, "the two nodes did not connect"
            time.sleep(0.05)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for node in nodes:
                print(f"--- {node.kind} {node.port} output ---\n{node.output()}")


class Driver:
    """An external client program run as `ARGV... SCENARIO URL` (exit 0 = every assertion held).

    A line "RESTART" on its stdout makes the runner restart the server and answer "RESTARTED".
    """

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv

    def run(self, scenario: str, server: Broker, url: str | None = None) -> None:
        proc = subprocess.Popen(
            [*self.argv, scenario, url or server.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(DRIVER_TIMEOUT, kill)
        timer.start()
        out = []
        try:
            for line in proc.stdout:
                if line.strip() == "RESTART":
                    server.restart()
                    proc.stdin.write("RESTARTED\n")
                    proc.stdin.flush()
                else:
                    out.append(line)
            err = proc.stderr.read()
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                pipe.close()
        if rc != 0:
            why = f"killed after {DRIVER_TIMEOUT} s" if timed_out.is_set() else f"exit {rc}"
            pytest.fail(f"{self.name} {scenario} against {server.kind} failed ({why}):\n{''.join(out)}{err}")


@pytest.fixture(scope="session")
def nats_js() -> Driver:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed")
    if not (NODE_DIR / "node_modules" / "nats" / "package.json").exists():
        pytest.fail(f"the nats npm package is missing from {NODE_DIR}: {INSTALL_HINT}")
    return Driver("nats.js", [node, str(NODE_DIR / "scenarios.mjs")])


@pytest.fixture(scope="session")
def libnats(tmp_path_factory: pytest.TempPathFactory) -> Driver:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is not installed")
    exe = tmp_path_factory.mktemp("libnats") / "scenarios"
    build = subprocess.run(
        [gcc, "-std=c11", "-D_DEFAULT_SOURCE", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror", "-O1",
         "-o", str(exe), str(C_SOURCE), "-lnats", "-lpthread"],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        pytest.fail(f"compiling {C_SOURCE.name} against libnats failed ({INSTALL_HINT}):\n{build.stderr}")
    return Driver("libnats", [str(exe)])
