"""What operators see of the cluster clock (mailbox/clock.py): the ``clock`` of ``/raftz``, the
skew that ``/metrics`` exports, and a log warning when this node's clock is far off.

A reporter's skew is its latest reading minus the cluster clock: good to about a second (a
reading is up to one report interval old, and the cluster clock lags true time by up to one).
This node's skew is its own reporter's, taken from replicated state, so a node cut off from the
cluster keeps its last figure instead of counting up; ``wall_minus_cluster_ms`` (this node's
clock now minus the cluster clock it has applied) does count up then, as the cluster clock stands
still for it. Reads a ``ClusterClock`` the Raft thread replaces whole; never the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from mq9cluster.mailbox.clock import REPORT_INTERVAL, ClusterClock

WARN_SKEW_MS = 5_000  # a node's skew past this is logged as a WARNING
WARN_EVERY = 60.0  # seconds between warnings while the skew stays past it

log = logging.getLogger("mq9cluster.clock")


def skew_ms(clock: ClusterClock, reporter: str) -> int | None:
    """``reporter``'s latest reading minus the cluster clock (ms); None if either is not known."""
    entry = clock.reporters.get(reporter)
    return None if entry is None or not clock.now else entry[0] - clock.now


def clock_view(clock: ClusterClock, reporter: str, wall_ms: int) -> dict[str, Any]:
    """JSON-ready: the cluster clock, this node's (``reporter``'s) clock ``wall_ms`` and skew, and
    each reporting node's latest reading, skew, and how many reports were applied since it."""
    known = bool(clock.now)
    return {
        "cluster_ms": clock.now if known else None,
        "wall_ms": wall_ms,
        "wall_minus_cluster_ms": wall_ms - clock.now if known else None,
        "skew_ms": skew_ms(clock, reporter),
        "reporters": {
            name: {"reported_ms": wall, "skew_ms": wall - clock.now if known else None,
                   "reports_since": clock.reports - heard}
            for name, (wall, _, heard) in sorted(clock.reporters.items())
        },
    }


class SkewWarning:
    """Logs a WARNING while this node's skew is past ``threshold_ms``, at most once per ``every``
    seconds, and an INFO line once it is back within it. Pure: the caller passes the time."""

    def __init__(self, threshold_ms: int = WARN_SKEW_MS, every: float = WARN_EVERY) -> None:
        self.threshold_ms = threshold_ms
        self.every = every
        self._warned_at: float | None = None

    def check(self, skew: int | None, now: float) -> None:
        """Weigh the skew (ms; None: not known, which changes nothing) at monotonic time ``now``."""
        if skew is None:
            return
        if abs(skew) <= self.threshold_ms:
            if self._warned_at is not None:
                log.info("this node's clock is back within %.0f s of the cluster clock (%+.1f s)",
                         self.threshold_ms / 1000, skew / 1000)
                self._warned_at = None
            return
        if self._warned_at is None or now - self._warned_at >= self.every:
            self._warned_at = now
            log.warning(
                "this node's clock is %+.1f s off the cluster clock (more than %.0f s): fix its time "
                "sync (NTP); TTLs go by the cluster clock, and this node's time stamps are bounded to it",
                skew / 1000, self.threshold_ms / 1000)


async def watch(read_skew: Callable[[], int | None], interval: float = REPORT_INTERVAL) -> None:
    """Check this node's skew (``read_skew``, ms) every ``interval`` seconds, warning as above."""
    warning = SkewWarning()
    while True:
        await asyncio.sleep(interval)
        warning.check(read_skew(), time.monotonic())
