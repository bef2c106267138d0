"""A leader whose wall clock runs two hours ahead, on a real three-node cluster (no root needed).

Every node runs with the chaos harness's clock shim (chaos/clockshim: ``time.time()`` follows a
spec file, monotonic time is left alone); the test moves the leader's clock once it leads.
Before the cluster clock, that leader expired a 600 s mailbox within a second, with every
acknowledged message in it (docs/reliability.md, open finding 1). Every node's /raftz and
/metrics show the skew, and the skewed node warns in its log. And ``--legacy-clock``, the
rolling-upgrade mode: no clock reports (an older node could not apply them), expiry as before.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime
from pathlib import Path

import chaos.nodes
from tests.server.test_metrics import scrape
from tests.support.cluster import Cluster
from tests.support.nats_client import connect, create, request, run

SKEW = "+2h"


def shimmed(group: Cluster, workdir: Path) -> dict[str, Path]:
    """Give every node the clock shim, reading a spec file of its own (true time at first)."""
    specs = {}
    for node in group.nodes:
        spec = workdir / f"clock-{node.port}.spec"
        spec.write_text("+0 x1\n")
        node.env = {"PYTHONPATH": str(chaos.nodes.CLOCK_SHIM), "MQ9_CHAOS_CLOCK": str(spec)}
        specs[node.raft_addr] = spec
    return specs


def wall_clock(node) -> float:
    """The node's own wall clock (``/varz`` now), unix seconds."""
    return datetime.fromisoformat(node.http_json("/varz")["now"].replace("Z", "+00:00")).timestamp()


def test_a_leader_two_hours_ahead_neither_expires_a_mailbox_early_nor_refuses_its_sends(tmp_path) -> None:
    group = Cluster(tmp_path, 3, ["--expiry-interval", "0.2"])
    specs = shimmed(group, tmp_path)
    group.start()
    try:
        leader = group.wait_leader()
        specs[leader.raft_addr].write_text(SKEW + "\n")
        time.sleep(1.5)  # the shim reads its spec within 0.2 s; the leader reports its clock
        assert wall_clock(leader) - time.time() > 7000, "the leader's clock is not skewed"
        follower = next(node for node in group.nodes if node is not leader)

        async def scenario() -> None:
            nl, nf = await connect(leader), await connect(follower)
            try:
                # created by a true clock and by the skewed one: 600 s and 3 s TTLs
                kept = [await create(nf, ttl=600), await create(nl, ttl=600)]
                brief = [await create(nf, ttl=3), await create(nl, ttl=3)]
                created = time.monotonic()
                for i in range(10):
                    for nc in (nl, nf):
                        for address in kept + brief:
                            reply = await request(nc, f"$mq9.AI.MAILBOX.{address}", b"m%d" % i)
                            assert "msg_id" in reply, (address, reply)
                await asyncio.sleep(max(0.0, created + 2.5 - time.monotonic()))
                for address in brief:  # not early
                    assert "msg_id" in await request(nf, f"$mq9.AI.MAILBOX.{address}", b"still")
                for address in brief:  # but within a few seconds of the TTL
                    while "msg_id" in await request(nf, f"$mq9.AI.MAILBOX.{address}", b"probe"):
                        assert time.monotonic() - created < 3 + 5, f"the 3 s mailbox {address} did not expire"
                        await asyncio.sleep(0.1)
                for nc in (nl, nf):
                    for address in kept:
                        assert "msg_id" in await request(nc, f"$mq9.AI.MAILBOX.{address}", b"late")
                for node in group.nodes:
                    nc = await connect(node)
                    for address in kept:
                        listed = await request(nc, f"$mq9.AI.MAILBOX.LIST.{address}")
                        assert len(listed.get("messages", [])) == 22, (node.port, address, listed)
                    await nc.close()
            finally:
                await nl.close()
                await nf.close()

        run(scenario())
        assert group.wait_leader() is leader, "leadership moved: the test did not test a skewed leader"
        shows_the_skew(group, leader)
    finally:
        group.stop()


def shows_the_skew(group: Cluster, skewed) -> None:
    """/raftz on every node shows the skewed node about +7200 s off the cluster clock and the
    others about 0; each node's /metrics its own skew; the skewed node's log has the warning."""
    for node in group.nodes:
        clock = node.http_json("/raftz")["clock"]
        ahead = 7200_000 if node is skewed else 0
        assert abs(clock["wall_ms"] - time.time() * 1000 - ahead) < 2_000, (node.port, clock)
        assert abs(clock["cluster_ms"] - time.time() * 1000) < 3_000, (node.port, clock)
        assert abs(clock["skew_ms"] - ahead) < 2_500, (node.port, clock)
        assert abs(clock["wall_minus_cluster_ms"] - ahead) < 2_500, (node.port, clock)
        skews = {name: entry["skew_ms"] for name, entry in clock["reporters"].items()}
        assert skews.keys() == {other.raft_addr for other in group.nodes}, (node.port, clock)
        for other in group.nodes:
            assert abs(skews[other.raft_addr] - (7200_000 if other is skewed else 0)) < 2_500, (node.port, skews)
        samples = scrape(node)
        assert abs(samples["mq9_clock_skew_seconds"] - ahead / 1000) < 2.5, (node.port, samples)
        assert abs(samples["mq9_cluster_clock_ms"] - clock["cluster_ms"]) < 3_000, (node.port, samples)
        warned = [float(s) for s in re.findall(r"clock is ([-+][\d.]+) s off the cluster clock", node.output())]
        if node is skewed:  # once: at most one warning a minute
            assert len(warned) == 1 and abs(warned[0] - 7200) < 2.5, (node.port, node.output()[-2000:])
        else:
            assert warned == [], (node.port, warned)


def idle_entries(node, seconds: float) -> int:
    """Raft entries committed while nobody sends anything for ``seconds``."""
    before = node.http_json("/raftz")["commit_index"]
    time.sleep(seconds)
    return node.http_json("/raftz")["commit_index"] - before


def test_legacy_clock_reports_nothing_and_still_expires_mailboxes(mq9) -> None:
    reporting, legacy = mq9(), mq9("--legacy-clock", "--expiry-interval", "0.2")
    assert idle_entries(reporting, 2.5) >= 2  # one clock report a second
    assert idle_entries(legacy, 2.5) == 0  # what a node of an older release can apply
    assert legacy.http_json("/raftz")["clock"]["cluster_ms"] is None
    assert "mq9_clock_skew_seconds" not in scrape(legacy) and scrape(legacy)["mq9_cluster_clock_ms"] == 0

    async def scenario() -> None:
        nc = await connect(legacy)
        try:
            address = await create(nc, ttl=1)
            created = time.monotonic()
            while "msg_id" in await request(nc, f"$mq9.AI.MAILBOX.{address}", b"x"):
                assert time.monotonic() - created < 5, "no expiry without the cluster clock"
                await asyncio.sleep(0.1)
        finally:
            await nc.close()

    run(scenario())


def test_a_single_node_shows_the_cluster_clock_in_raftz_and_metrics(mq9) -> None:
    node = mq9()
    deadline = time.monotonic() + 10
    while (clock := node.http_json("/raftz")["clock"])["cluster_ms"] is None:
        assert time.monotonic() < deadline, f"no cluster clock: {clock}"
        time.sleep(0.1)
    now_ms = time.time() * 1000
    assert abs(clock["wall_ms"] - now_ms) < 1_000, clock
    assert 0 <= now_ms - clock["cluster_ms"] < 3_000, clock  # it lags by up to a report interval
    assert abs(clock["skew_ms"]) < 1_000 and abs(clock["wall_minus_cluster_ms"]) < 3_000, clock
    assert list(clock["reporters"]) == [node.raft_addr], clock
    assert clock["reporters"][node.raft_addr]["skew_ms"] == clock["skew_ms"], clock
    samples = scrape(node)
    assert clock["cluster_ms"] <= samples["mq9_cluster_clock_ms"] < clock["cluster_ms"] + 3_000, samples
    assert abs(samples["mq9_clock_skew_seconds"]) < 1.0, samples
    assert "off the cluster clock" not in node.output()
