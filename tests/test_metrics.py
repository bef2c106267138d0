"""metrics.CheapHistogram is exposed exactly like prometheus-client's Histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from mq9cluster.metrics import CheapHistogram

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 1.0, 10.0)
VALUES = (0.0, 0.0004, 0.0005, 0.00050001, 0.003, 0.003, 0.5, 10.0, 11.0, 1e9)


def text(histogram) -> list[str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(histogram)
    return [line for line in generate_latest(registry).decode().splitlines() if "_created " not in line]


def test_same_exposition_as_prometheus_histogram():
    cheap = CheapHistogram("x_seconds", "Some latency.", BUCKETS)
    reference = Histogram("x_seconds", "Some latency.", registry=None, buckets=BUCKETS)
    assert text(cheap) == text(reference)  # empty
    for value in VALUES:
        cheap.observe(value)
        reference.observe(value)
    assert text(cheap) == text(reference)
    assert 'x_seconds_bucket{le="0.0005"} 3.0' in text(cheap)  # a bound is inclusive
    assert "x_seconds_count 10.0" in text(cheap)
