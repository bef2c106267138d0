"""Cluster administration from outside a node: status, join, leave, over the members' Raft ports.

Speaks pysyncobj's utility commands (``status``, ``add``, ``remove``, ``transfer``; the protocol of
its ``syncobj_admin`` tool) to a member's Raft address, so it works whatever state the NATS side
is in. Blocking calls, meant for the CLI and for a joining node's start-up thread. A membership
change is committed through the Raft log like any entry: ``add``/``remove`` answer once it is.
Both are idempotent (a change already committed is success with nothing to do) and raise
``MembershipUnknown`` when a change was proposed but not confirmed; calling again converges.
A cluster started with a password (``--cluster-password``) answers only calls made with it.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from pysyncobj.utility import TcpUtility, UtilityException

from mq9cluster.cluster.raft import RaftStatus
from mq9cluster.errors import ClusterAdminError, MembershipUnknown

CALL_TIMEOUT = 5.0


def call(address: str, command: list[str], timeout: float = CALL_TIMEOUT, password: str | None = None) -> object:
    """Send one utility command to the member at ``address``; its answer."""
    try:
        answer = TcpUtility(password=password or None, timeout=timeout).executeCommand(address, command)
    except UtilityException as exc:
        raise ClusterAdminError(f"raft node {address}: {exc or 'no answer'}{_why_no_answer(address)}") from None
    except (OSError, ValueError) as exc:
        raise ClusterAdminError(f"raft node {address}: {exc}") from None
    if answer is None:
        raise ClusterAdminError(f"raft node {address}: cannot connect")
    return answer


def _why_no_answer(address: str) -> str:
    """Tell a node that is down from one that dropped the call (a wrong or missing password)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except (OSError, ValueError) as exc:
        return f" (nothing answers there: {getattr(exc, 'strerror', None) or exc})"
    return " (the port is open: a cluster started with --cluster-password drops calls without the same password)"


def node_status(address: str, timeout: float = CALL_TIMEOUT, password: str | None = None) -> RaftStatus:
    """The member's own view: role, term, leader, commit/applied index, peers."""
    raw = call(address, ["status"], timeout, password)
    if not isinstance(raw, dict):
        raise ClusterAdminError(f"raft node {address}: unexpected status answer {raw!r}")
    return RaftStatus.from_pysyncobj(address, raw)


def add_member(seed: str, member: str, timeout: float = 30.0, password: str | None = None) -> bool:
    """Make ``member`` a voting member, through the cluster ``seed`` belongs to; returns once committed.

    True if it was added now, False if it already was a member (nothing to do). Raises
    ``MembershipUnknown`` when the addition was proposed but not confirmed (no quorum, time-out):
    call again. With two members or fewer before the change, it commits only once ``member`` runs.
    """
    return _change(leader_view(seed, password), "add", member, timeout, password)


def remove_member(member: str, seed: str | None = None, timeout: float = 30.0, password: str | None = None,
                  ) -> tuple[bool, str]:
    """Take ``member`` out of the cluster: (removed now, the leader that decided).

    False means it was no member (any more): nothing to do. A leader cannot remove itself: when
    ``member`` leads, leadership is handed to the most caught-up follower first. ``seed`` is any
    member to start from (default: ``member`` itself, which must then be reachable). Raises
    ``MembershipUnknown`` when the removal was proposed but not confirmed: call again.
    """
    leader = leader_view(seed or member, password)
    if leader.address == member:
        call(member, ["transfer"], timeout, password)
        new = _wait_new_leader(member, [m for m in leader.members if m != member], timeout, password)
        leader = leader_view(new, password)
    return _change(leader, "remove", member, timeout, password), leader.address


def leader_view(seed: str, password: str | None = None) -> RaftStatus:
    """The leader's own status, found through ``seed``; ClusterAdminError if there is none."""
    leader = node_status(seed, password=password).leader
    if leader is None:
        raise ClusterAdminError(f"no leader known to {seed}: nothing was changed; retry once the cluster has one")
    view = node_status(leader, password=password)
    if view.role != "leader":
        raise ClusterAdminError(f"{leader} is not the leader any more: nothing was changed; retry")
    return view


def _change(leader: RaftStatus, verb: str, member: str, timeout: float, password: str | None) -> bool:
    """Propose ``verb member`` at ``leader`` unless its membership already says it is done.

    pysyncobj changes a node's membership when the change is appended to its log, not when it
    commits; so a view that already shows the change counts only once the leader has committed
    every entry it has replicated (``_settled``). Which failures are certain: before the
    proposal, any; after it, a ``FAIL`` answer while the same leader still shows the old
    membership (it appended nothing). Every other failure after the proposal is unknown.
    """
    wanted = verb == "add"
    if (member in leader.members) == wanted:
        if _settled(leader.address, leader.term, password):
            return False
        raise MembershipUnknown(f"{leader.address} (leader) shows {member} {_state(wanted)} already, but has "
                                "not committed it yet: an earlier change is waiting for a quorum")
    try:
        answer = call(leader.address, [verb, member], timeout, password)
    except ClusterAdminError as exc:
        raise MembershipUnknown(f"{verb} {member} was sent to {leader.address}, no answer came: {exc}") from None
    if isinstance(answer, str) and answer.startswith("SUCCESS"):
        return True
    try:
        after = node_status(leader.address, password=password)
    except ClusterAdminError:
        after = None
    if after is not None and (after.role, after.term) == ("leader", leader.term) and (member in after.members) != wanted:
        raise ClusterAdminError(f"{verb} {member} refused by {leader.address} ({answer}): nothing was changed; "
                                "retry (another membership change may be in progress)")
    raise MembershipUnknown(f"{verb} {member} was proposed at {leader.address} and not confirmed ({answer}): "
                            "the leader lost its quorum or its leadership")


def _state(member: bool) -> str:
    return "a member" if member else "removed"


def _settled(leader: str, term: int, password: str | None, wait: float = 3.0) -> bool:
    """Whether ``leader``, still leading in ``term``, commits every entry it has replicated within ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        view = node_status(leader, password=password)
        if (view.role, view.term) != ("leader", term):
            return False
        if view.has_quorum and view.commit_index >= max(view.match_index.values(), default=0):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


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
