"""Metric objects and names (Prometheus, via ``prometheus-client``), nothing else.

Two kinds: histograms observed where the event happens (fsync, send-ack, batch size), module
objects since the journal is built by pysyncobj's factory; and numbers the node already keeps
(server counters, Raft indexes), read at scrape time by ``NodeCollector`` from a snapshot
function app.py provides. Each node gets its own registry (``node_registry``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

PREFIX = "mq9"


class CheapHistogram(Collector):
    """A histogram for the per-request path: ``observe`` is one bisect and two additions, where
    prometheus-client's takes a lock and walks the buckets (about 4x the time). Exposed exactly
    as a prometheus-client Histogram (``_bucket``, ``_count``, ``_sum``, ``_created``).

    Not thread-safe: observed from one thread (the event loop); a scrape may run anywhere.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._created = time.time()

    def observe(self, value: float) -> None:
        """Count one value into the first bucket whose bound is >= it."""
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        counts, total = list(self._counts), self._sum  # copies: an observe may run meanwhile
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), counts):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        family = HistogramMetricFamily(self._name, self._documentation, buckets=buckets, sum_value=total)
        family.samples.append(Sample(f"{self._name}_created", {}, self._created))
        yield family


FSYNC_SECONDS = Histogram(
    f"{PREFIX}_raft_fsync_seconds", "Time to write and fdatasync one Raft log entry.", registry=None,
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
SEND_ACK_SECONDS = CheapHistogram(
    f"{PREFIX}_mailbox_op_ack_seconds", "Time from a mailbox operation's arrival to its reply (committed and applied).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
BATCH_OPS = Histogram(
    f"{PREFIX}_raft_batch_ops", "Mailbox operations carried by one proposed Raft entry.", registry=None,
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
EXPIRED_MAILBOXES = Counter(
    f"{PREFIX}_mailboxes_expired", "Mailboxes removed by TTL expiry, as applied on this node.", registry=None,
)

#: name -> (kind, help) of the numbers a node snapshot gives; the snapshot's keys are these names.
SNAPSHOT_METRICS: dict[str, tuple[str, str]] = {
    "messages_in": ("counter", "Messages received from clients."),
    "messages_out": ("counter", "Messages delivered to clients."),
    "bytes_in": ("counter", "Payload bytes received from clients."),
    "bytes_out": ("counter", "Payload bytes delivered to clients."),
    "connections": ("gauge", "Client connections open now."),
    "connections_accepted": ("counter", "Client connections accepted since start."),
    "subscriptions": ("gauge", "Plain NATS subscriptions in the subject index."),
    "slow_consumers": ("counter", "Clients cut for not reading fast enough."),
    "auth_failures": ("counter", "Clients refused for missing or wrong credentials."),
    "raft_term": ("gauge", "Current Raft term."),
    "raft_is_leader": ("gauge", "1 when this node is the Raft leader."),
    "raft_commit_index": ("gauge", "Highest Raft log index known committed."),
    "raft_applied_index": ("gauge", "Highest Raft log index applied to the store."),
    "raft_apply_lag": ("gauge", "Committed entries not yet applied (commit index - applied index)."),
    "raft_proposals": ("counter", "Raft entries (batches of mailbox operations) proposed by this node."),
    "raft_proposal_retries": ("counter", "Raft proposals retried after a failure."),
    "raft_peers_connected": ("gauge", "Raft peers this node is connected to."),
    "mailboxes": ("gauge", "Mailboxes in the store, as applied on this node."),
    "stored_messages": ("gauge", "Messages stored in all mailboxes."),
    "stored_bytes": ("gauge", "Bytes (payloads and headers) stored in all mailboxes."),
    "cluster_clock_ms": ("gauge", "The cluster clock (unix ms) as applied on this node; 0 before the first clock report."),
    "clock_skew_seconds": ("gauge", "This node's wall clock minus the cluster clock, from its latest applied clock report."),
}


class NodeCollector(Collector):
    """Turns a node's snapshot of numbers (keys of SNAPSHOT_METRICS) into metric families."""

    def __init__(self, snapshot: Callable[[], Mapping[str, float]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        values = self._snapshot()
        for name, (kind, text) in SNAPSHOT_METRICS.items():
            if name not in values:
                continue
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(f"{PREFIX}_{name}", text, value=values[name])


def node_registry(snapshot: Callable[[], Mapping[str, float]]) -> CollectorRegistry:
    """A registry with the shared histograms and one node's snapshot numbers."""
    registry = CollectorRegistry(auto_describe=False)
    for metric in (FSYNC_SECONDS, SEND_ACK_SECONDS, BATCH_OPS, EXPIRED_MAILBOXES):
        registry.register(metric)
    registry.register(NodeCollector(snapshot))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format."""
    return generate_latest(registry)
