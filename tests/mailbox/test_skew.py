"""What operators see of the cluster clock: the /raftz view of skews, and the rate-limited warning."""

from __future__ import annotations

import logging

from mq9cluster.mailbox import ops
from mq9cluster.mailbox.clock import ClusterClock
from mq9cluster.mailbox.skew import SkewWarning, clock_view, skew_ms

T0 = 1_700_000_000_000
HOUR = 3_600_000
A, B, C = "10.0.0.1:9000", "10.0.0.2:9000", "10.0.0.3:9000"


def reported(*readings: tuple[str, int]) -> ClusterClock:
    clock = ClusterClock()
    for reporter, wall in readings:
        clock = clock.after(ops.ClockOp(reporter, wall, 3))
    return clock


def test_a_node_two_hours_ahead_stands_out_and_the_others_are_near_zero() -> None:
    clock = reported((A, T0), (B, T0 + 2 * HOUR), (C, T0 + 400), (A, T0 + 1_000))
    assert clock.now == T0 + 1_000
    view = clock_view(clock, B, T0 + 2 * HOUR + 1_500)
    assert view["cluster_ms"] == T0 + 1_000
    assert view["wall_minus_cluster_ms"] == 2 * HOUR + 500
    assert view["skew_ms"] == 2 * HOUR - 1_000
    assert {name: entry["skew_ms"] for name, entry in view["reporters"].items()} == {
        A: 0, B: 2 * HOUR - 1_000, C: -600}
    assert view["reporters"][A]["reports_since"] == 0
    assert view["reporters"][B]["reports_since"] == 2


def test_before_any_report_nothing_is_known_but_this_nodes_clock() -> None:
    view = clock_view(ClusterClock(), A, T0)
    assert view == {"cluster_ms": None, "wall_ms": T0, "wall_minus_cluster_ms": None, "skew_ms": None,
                    "reporters": {}}
    assert skew_ms(reported((A, T0)), A) is None  # one report of three voters: no majority, no clock yet
    assert skew_ms(reported((A, T0), (B, T0)), C) is None  # a clock, but C has not reported


def test_the_warning_comes_at_most_once_a_minute_and_says_when_the_clock_is_back(caplog) -> None:
    caplog.set_level(logging.INFO, logger="mq9cluster.clock")
    warning = SkewWarning(threshold_ms=5_000, every=60.0)
    for now, skew in [(0, 4_000), (1, None), (2, 7_200_000), (3, 7_200_000), (61, 7_200_000), (62, 7_200_000),
                      (63, None), (100, -6_000), (122, -6_000), (123, 300), (124, 300), (125, -5_001)]:
        warning.check(skew, now)
    assert [(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records] == [
        ("WARNING", "this node's clock is +7200.0 s off the cluster clock"),
        ("WARNING", "this node's clock is +7200.0 s off the cluster clock"),
        ("WARNING", "this node's clock is -6.0 s off the cluster clock"),  # a minute on, whatever the skew
        ("INFO", "this node's clock is back within 5 s of the cluster clock"),
        ("WARNING", "this node's clock is -5.0 s off the cluster clock"),
    ]
