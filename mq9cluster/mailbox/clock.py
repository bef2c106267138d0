"""The cluster clock: the time the state machine decides TTLs, delays and ack deadlines by.

Every node proposes a ``ClockOp`` (its address, its wall clock, how many voting members it
sees) about once a second. Applying one keeps each reporter's latest reading and moves the
cluster clock to the time a majority of reporters have reached (the majority-th highest
reading), never back. So no single node's clock, however far ahead, moves it: it is at or
behind the clock of some node that is not ahead. It lags true time by about a report interval.

Mailbox TTLs are over when the cluster clock reaches them (``Now.expiry``). Times of finer
grain (message timestamps, dialect-3 delays, message TTLs, ack deadlines) take the proposer's
stamp bounded to ``[cluster clock, cluster clock + SLACK_MS]`` (``Now.stamp``): exact for a
true clock, off by at most ``SLACK_MS`` for a skewed one. Before the first report is applied
(a new cluster, or entries written by a release without the cluster clock) both are the
proposer's stamp, as they always were, so old logs apply as they did.

Pure and deterministic: everything comes from ops and the replicated record; no clock is read.
"""

from __future__ import annotations

from typing import NamedTuple

from mq9cluster.mailbox import ops

REPORT_INTERVAL = 1.0  # seconds between a node's clock reports
SLACK_MS = 2_000  # how far past the cluster clock a proposer's stamp is taken (true stamps lead by ~1 s)
STALE_ROUNDS = 30  # a reporter is forgotten after this many reports per voter without one of its own


class Now(NamedTuple):
    """The times one op applies at."""

    expiry: int  # mailbox TTLs that end at or before this are over
    stamp: int  # the op's own time, bounded by the cluster clock


class ClusterClock(NamedTuple):
    """Replicated: the cluster time (unix ms, 0 = no report yet), the count of reports applied,
    and each reporter's latest ``[wall_ms, voters, report count when heard]``."""

    now: int = 0
    reports: int = 0
    reporters: dict[str, list[int]] = {}

    @classmethod
    def from_record(cls, record: list | None) -> ClusterClock:
        """The clock stored as ``record`` (None: no report applied yet)."""
        return cls() if record is None else cls(record[0], record[1], dict(record[2]))

    def record(self) -> list:
        """What the store keeps."""
        return [self.now, self.reports, self.reporters]

    def at(self, stamp_ms: int) -> Now:
        """The times of an op stamped ``stamp_ms`` by its proposer."""
        if not self.now:
            return Now(stamp_ms, stamp_ms)
        return Now(self.now, min(max(stamp_ms, self.now), self.now + SLACK_MS))

    def after(self, op: ops.ClockOp) -> ClusterClock:
        """The clock once ``op`` is applied; the op is kept as its reporter's latest reading."""
        reports = self.reports + 1
        reporters = dict(self.reporters)
        reporters[op.reporter] = [op.wall_ms, max(op.voters, 1), reports]
        voters = max(voters for _, voters, _ in reporters.values())
        reporters = {name: entry for name, entry in reporters.items()
                     if reports - entry[2] <= STALE_ROUNDS * voters}
        voters = max(voters for _, voters, _ in reporters.values())
        majority = voters // 2 + 1
        readings = sorted((wall for wall, _, _ in reporters.values()), reverse=True)
        now = max(self.now, readings[majority - 1]) if len(readings) >= majority else self.now
        return ClusterClock(now, reports, reporters)
