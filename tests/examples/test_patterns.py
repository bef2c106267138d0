"""Every example in examples/ run as a user runs it (`python examples/pN_....py URL,URL,URL`) against a
real three-node cluster; patterns 1, 3 and 5 with a node SIGKILLed while the example runs (each on a
cluster of its own), the others on one cluster they share."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cluster import Cluster
from tests.test_cli_mailbox import interrupt, ok, read_lines, watcher

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RUN_TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(120)


def run_example(script: str, urls: list[str], when: dict[str, Callable[[str], None]] | None = None) -> list[str]:
    """Run one example to the end; ``when[text](line)`` runs once, as soon as a printed line contains text."""
    pending = dict(when or {})
    proc = subprocess.Popen([sys.executable, str(EXAMPLES / script), ",".join(urls)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            for text in [t for t in pending if t in line]:
                pending.pop(text)(line)
            assert time.monotonic() < deadline, f"{script} still running after {RUN_TIMEOUT} s: {lines}"
        rc = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert rc == 0, f"{script} exited {rc}\n" + "\n".join(lines) + "\n" + err
    assert not pending, f"{script} never printed {list(pending)}: {lines}"
    return lines


def leader_first(group: Cluster) -> list[str]:
    """The URLs with the Raft leader's first (examples pick nodes by position)."""
    leader = group.wait_leader()
    return [leader.url] + [node.url for node in group.nodes if node is not leader]


def by_url(group: Cluster, url: str):
    return next(node for node in group.nodes if node.url == url)


def test_p1_subagent_notifies_an_offline_orchestrator_across_a_leader_kill(cluster):
    group = cluster(3)
    leader = group.wait_leader()
    lines = run_example("p1_subagent_notifies_orchestrator.py", group.urls,
                        {"result stored": lambda _: leader.kill()})
    assert lines[-1] == "orchestrator: back online, got 'revenue up 12%' (urgent)"


def test_p2_ttl_health_monitoring(shared_cluster):
    lines = run_example("p2_ttl_health_monitoring.py", shared_cluster.urls)
    assert "orchestrator: health.beta expired and did not come back: worker down" in lines
    assert not any("health.alpha" in line for line in lines)


def test_p3_task_queue_exactly_once_while_the_producers_node_dies(cluster):
    group = cluster(3)
    leader, *followers = leader_first(group)
    followers_then_leader = [*followers, leader]  # workers on the followers, the producer on the leader
    producer_node = by_url(group, followers_then_leader[2])
    lines = run_example("p3_task_queue.py", followers_then_leader,
                        {"tasks queued": lambda _: producer_node.kill()})
    assert lines[-1].startswith("producer: every task done exactly once")
    done = [int(m.group(1)) for line in lines if (m := re.search(r"did task (\d+)$", line))]
    assert sorted(set(done)) == list(range(30))


def test_p4_anomaly_broadcast_critical_first(shared_cluster):
    lines = run_example("p4_anomaly_broadcast.py", shared_cluster.urls)
    for handler in ("pager", "dashboard"):
        assert [line for line in lines if line.startswith(handler)] == [
            f"{handler}: [critical] payment error rate 30%", f"{handler}: [normal] p99 latency 2x baseline",
            f"{handler}: [low] disk 71% on db-2"]


def test_p5_edge_backlog_emergency_first_while_a_follower_dies(cluster):
    group = cluster(3)
    urls = leader_first(group)  # the cloud sends through urls[1], a follower
    cloud_node = by_url(group, urls[1])
    lines = run_example("p5_edge_offline_buffering.py", urls, {"500 routine": lambda _: cloud_node.kill()})
    assert lines[-2:] == ["edge: link up, first command: EMERGENCY STOP valve 3",
                          "edge: then 1000 routine commands, none missing"]


def test_p6_human_approves_from_the_cli(shared_cluster):
    group = shared_cluster

    def human(line: str) -> None:
        inbox = re.search(r"mailbox send (\S+) approve", line).group(1)
        watch = watcher(group.urls[1], "watch", "approvals")  # the person reads the question, then Ctrl-C
        try:
            (question,) = read_lines(watch, 1)
        finally:
            assert interrupt(watch)[0] == 0
        assert "delete 1,204 stale customer records?" in question and inbox in question
        ok(group.urls[2], "send", inbox, "approve")

    lines = run_example("p6_human_approval.py", group.urls, {"agent: asked": human})
    assert lines[-1] == "agent: approved, deleting the records"


def test_p7_async_request_reply(shared_cluster):
    lines = run_example("p7_async_request_reply.py", shared_cluster.urls)
    assert sorted(lines[-2:]) == ["requester: 100 USD = 92.0 EUR", "requester: 250 USD = 230.0 EUR"]


def test_p8_capability_discovery(shared_cluster):
    lines = run_example("p8_capability_discovery.py", shared_cluster.urls)
    assert lines[-1] == "deepl7: got task {'translate': 'bonjour', 'to': 'en'}"


def test_langchain_tools_example(shared_cluster):
    lines = run_example("langchain_tools.py", shared_cluster.urls)
    assert lines[-2:] == ["No messages in mailbox 'agents.reviewer'.", ""]
    assert "  [1] priority=high  content=review draft B today, reply to" in "\n".join(lines)
