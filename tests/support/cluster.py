"""A real mq9cluster cluster for tests: N broker processes on loopback forming one Raft group and
one full mesh of routes (core NATS between the nodes)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.broker import Broker

LEADER_TIMEOUT = 10.0


class Cluster:
    """``size`` mq9cluster processes, each given every member's Raft address (``--peers``) and
    route address (``--routes``)."""

    def __init__(self, workdir: Path, size: int = 3, extra_args: list[str] | None = None) -> None:
        self.nodes = [Broker("mq9cluster", workdir) for _ in range(size)]
        peers = ",".join(node.raft_addr for node in self.nodes)
        routes = ",".join(node.cluster_addr for node in self.nodes)
        for node in self.nodes:
            node.extra_args = ["--peers", peers, "--node-id", f"n{node.port}",
                               "--cluster", node.cluster_addr, "--routes", routes, *(extra_args or [])]

    def start(self) -> Cluster:
        for node in self.nodes:
            node.start()
        self.wait_leader()
        self.wait_routes()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def running(self) -> list[Broker]:
        return [node for node in self.nodes if node.proc is not None]

    def wait_routes(self, timeout: float = LEADER_TIMEOUT) -> None:
        """Until every running node has a route to every other running node."""
        deadline = time.monotonic() + timeout
        while True:
            want = len(self.running()) - 1
            counts = [node.http_json("/routez")["num_routes"] for node in self.running()]
            if all(count == want for count in counts):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"routes not meshed after {timeout} s: {counts} (want {want} each)")
            time.sleep(0.05)

    def raft_status(self, node: Broker) -> dict | None:
        """The node's ``/raftz``, or None if it does not answer."""
        try:
            return node.http_json("/raftz")
        except OSError:
            return None

    def wait_leader(self, timeout: float = LEADER_TIMEOUT) -> Broker:
        """The running node every running node agrees leads, once they do."""
        deadline = time.monotonic() + timeout
        while True:
            views = {node.raft_addr: self.raft_status(node) for node in self.running()}
            leaders = {view["leader"] for view in views.values() if view is not None}
            if len(leaders) == 1 and None not in leaders and all(views.values()):
                (leader,) = leaders
                for node in self.running():
                    if node.raft_addr == leader:
                        return node
            if time.monotonic() > deadline:
                pytest.fail(f"no agreed leader after {timeout} s: {views}")
            time.sleep(0.05)

    def wait_applied(self, timeout: float = LEADER_TIMEOUT) -> None:
        """Until every running node applied the leader's commit index as read at the call."""
        target = self.raft_status(self.wait_leader())["commit_index"]
        deadline = time.monotonic() + timeout
        while True:
            views = [self.raft_status(node) for node in self.running()]
            if all(view is not None and view["last_applied"] >= target for view in views):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"nodes did not apply index {target} within {timeout} s: {views}")
            time.sleep(0.05)
