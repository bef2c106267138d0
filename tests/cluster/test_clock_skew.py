"""A leader whose wall clock runs two hours ahead, on a real three-node cluster (no root needed).

Every node runs with the chaos harness's clock shim (chaos/clockshim: ``time.time()`` follows a
spec file, monotonic time is left alone); the test moves the leader's clock once it leads.
Before the cluster clock, that leader expired a 600 s mailbox within a second, with every
acknowledged message in it (docs/reliability.md, open finding 1). And ``--legacy-clock``, the
rolling-upgrade mode: no clock reports (an older node could not apply them), expiry as before.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import chaos.nodes
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
    finally:
        group.stop()


def idle_entries(node, seconds: float) -> int:
    """Raft entries committed while nobody sends anything for ``seconds``."""
    before = node.http_json("/raftz")["commit_index"]
    time.sleep(seconds)
    return node.http_json("/raftz")["commit_index"] - before


def test_legacy_clock_reports_nothing_and_still_expires_mailboxes(mq9) -> None:
    reporting, legacy = mq9(), mq9("--legacy-clock", "--expiry-interval", "0.2")
    assert idle_entries(reporting, 2.5) >= 2  # one clock report a second
    assert idle_entries(legacy, 2.5) == 0  # what a node of an older release can apply

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
