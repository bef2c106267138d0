"""Cluster administration from outside a node: status, join, leave, over the members' Raft ports.

Speaks pysyncobj's utility commands (``status``, ``add``, ``remove``, ``transfer``; the protocol of
its ``syncobj_admin`` tool) to a member's Raft address, so it works whatever state the NATS side
is in. Blocking calls, meant for the CLI and for a joining node's start-up thread. A membership
change is committed through the Raft log like any entry: ``add``/``remove`` answer once it is.
A cluster started with a password (``--cluster-password``) answers only calls made with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pysyncobj.utility import TcpUtility, UtilityException

from mq9cluster.cluster.raft import RaftStatus
from mq9cluster.errors import ClusterAdminError

CALL_TIMEOUT = 5.0


def call(address: str, command: list[str], timeout: float = CALL_TIMEOUT, password: str | None = None) -> object:
    """Send one utility command to the member at ``address``; its answer."""
    try:
        answer = TcpUtility(password=password or None, timeout=timeout).executeCommand(address, command)
    except UtilityException as exc:
        hint = " (a cluster started with --cluster-password drops calls without the same password)"
        raise ClusterAdminError(f"raft node {address}: {exc or 'no answer'}{hint}") from None
    except (OSError, ValueError) as exc:
        raise ClusterAdminError(f"raft node {address}: {exc}") from None
    if answer is None:
        raise ClusterAdminError(f"raft node {address}: cannot connect")
    return answer


def node_status(address: str, timeout: float = CALL_TIMEOUT, password: str | None = None) -> RaftStatus:
    """The member's own view: role, term, leader, commit/applied index, peers."""
    raw = call(address, ["status"], timeout, password)
    if not isinstance(raw, dict):
        raise ClusterAdminError(f"raft node {address}: unexpected status answer {raw!r}")
    return RaftStatus.from_pysyncobj(address, raw)


def _change(seed: str, verb: str, member: str, timeout: float, password: str | None) -> None:
    answer = call(seed, [verb, member], timeout, password)
    if not (isinstance(answer, str) and answer.startswith("SUCCESS")):
        raise ClusterAdminError(f"{verb} {member} through {seed} failed: {answer}")


def add_member(seed: str, member: str, timeout: float = 30.0, password: str | None = None) -> None:
    """Make ``member`` a voting member, through the cluster ``seed`` belongs to; returns once committed.

    With two members or fewer before the change, it commits only once ``member`` runs.
    """
    _change(seed, "add", member, timeout, password)


def remove_member(member: str, seed: str | None = None, timeout: float = 30.0, password: str | None = None) -> str:
    """Take ``member`` out of the cluster; the member that carried it out.

    A leader cannot remove itself: when ``member`` leads, leadership is handed to the most
    caught-up follower first. ``seed`` is any member to start from (default: ``member`` itself,
    which must then be reachable).
    """
    start = node_status(seed or member, password=password)
    leader = start.leader
    if leader is None:
        raise ClusterAdminError(f"no leader known to {start.address}: retry once the cluster has one")
    if leader == member:
        call(member, ["transfer"], timeout, password)
        leader = _wait_new_leader(member, [m for m in start.members if m != member], timeout, password)
    _change(leader, "remove", member, timeout, password)
    return leader


def _wait_new_leader(old: str, others: list[str], timeout: float, password: str | None) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for address in others:
            try:
                leader = node_status(address, timeout=1.0, password=password).leader
            except ClusterAdminError:
                continue
            if leader not in (None, old):
                return leader
        time.sleep(0.1)
    raise ClusterAdminError(f"leadership did not move away from {old} within {timeout} s")


@dataclass(frozen=True)
class MemberView:
    """One member as the status command shows it: its status, or why it could not be read."""

    address: str
    status: RaftStatus | None
    error: str | None


def cluster_status(seed: str, password: str | None = None) -> list[MemberView]:
    """Every member the seed knows of (the seed included), each asked for its own status."""
    views = []
    for address in node_status(seed, password=password).members:
        try:
            views.append(MemberView(address, node_status(address, password=password), None))
        except ClusterAdminError as exc:
            views.append(MemberView(address, None, str(exc)))
    return views
