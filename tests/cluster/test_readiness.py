"""Readiness (``/readyz``): a node takes client traffic once it is a caught-up member."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from mq9cluster.cluster.raft import RaftStatus
from tests.support.broker import free_port


def status(**changes) -> RaftStatus:
    base = dict(address="a:1", role="follower", term=3, leader="b:1", commit_index=10, last_applied=10,
                log_entries=10, has_quorum=True, peers={"b:1": True}, match_index={}, leader_commit_index=10)
    return RaftStatus(**{**base, **changes})


def test_a_caught_up_member_that_knows_the_leader_is_ready() -> None:
    assert status().not_ready_reason() is None
    assert status(role="leader", leader="a:1").not_ready_reason() is None


def test_not_ready_without_a_leader_while_behind_or_stopped() -> None:
    assert "no leader" in status(leader=None).not_ready_reason()
    assert status(last_applied=9).not_ready_reason() == "catching up: applied 9 of 10"
    # a follower still receiving the log knows the leader's commit index before its own reaches it
    assert status(commit_index=4, last_applied=4, leader_commit_index=90).not_ready_reason() == "catching up: applied 4 of 90"
    assert status(role="stopped").not_ready_reason() == "raft stopped"


def readyz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_readyz_over_http_on_a_cluster_and_on_a_node_without_quorum(cluster, mq9) -> None:
    group = cluster(3)
    group.wait_applied()
    for node in group.nodes:
        code, body = readyz(node.http_port)
        assert code == 200 and body["status"] == "ready", body
        assert body["leader"] == group.wait_leader().raft_addr

    # one member of a three-member cluster whose peers never come: no leader, so not ready
    alone = mq9("--peers", f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    code, body = readyz(alone.http_port)
    assert code == 503 and body["status"] == "unavailable" and "no leader" in body["error"], body
