"""Failover on a real three-node cluster: leader kills, restarts and cut-off nodes, seen by nats-py.

What a client may rely on during a leader change (docs/durability.md, "Failover"): every
acknowledged send is delivered, in priority order, never twice per subscription; a request that
cannot be served replies ``{"error": "... retry"}`` within the request timeout; a node cut off
from its quorum never serves a read as fresh. Failover times are printed (``pytest -s``); the test
bounds them loosely, the benchmark strictly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter

import nats
import pytest

from tests.support.broker import Broker
from tests.support.cluster import Cluster
from tests.support.mailbox_traffic import (
    LEVELS, Delivered, Producer, Reader, list_ids, make_payloads, payload_level, replay, request, subject, subscribe,
)
from tests.support.nats_client import ORDER, run, until

FAILOVER_BOUND = 10.0  # loose: the machine is shared; the < 3 s target is bench/failover.py's
REFUSAL_BOUND = 4.0  # a cut-off node answers reads and writes with an error within this


def assert_priority_order(got: list[Delivered]) -> None:
    """Highest priority first, FIFO (msg_id order) inside a level, every msg_id once."""
    ranks = [ORDER.index(d.level) for d in got]
    assert ranks == sorted(ranks), "replay not in priority order"
    for level in LEVELS:
        ids = [d.msg_id for d in got if d.level == level]
        assert ids == sorted(ids), f"{level} not FIFO"
    assert len({d.msg_id for d in got}) == len(got), "a msg_id delivered twice"
    assert all(payload_level(d.payload) == d.level for d in got), "a message under the wrong priority"


async def assert_serves(url: str, address: str, stored: dict[int, bytes]) -> None:
    """``url``'s LIST and a fresh subscription's replay hold exactly ``stored``, in priority order."""
    nc = await nats.connect(url)
    try:
        assert sorted(await list_ids(nc, address)) == sorted(stored)
    finally:
        await nc.close()
    replayed = await replay(url, address, len(stored))
    assert_priority_order(replayed)
    assert {d.msg_id: d.payload for d in replayed} == stored


async def to_thread(fn, *args):
    """The cluster helpers block (sleep, HTTP): keep the event loop and nats-py running."""
    return await asyncio.to_thread(fn, *args)


def others(group: Cluster, node: Broker) -> list[Broker]:
    return [n for n in group.nodes if n is not node]


def wait_leader_among(nodes: list[Broker], timeout: float = FAILOVER_BOUND) -> tuple[Broker, float]:
    """The node that all of ``nodes`` agree leads (the others may be dead or paused), and the
    seconds it took to find it."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        leaders = {node.http_json("/raftz")["leader"] for node in nodes}
        for node in nodes:
            if leaders == {node.raft_addr}:
                return node, time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"no leader among {[n.raft_addr for n in nodes]} after {timeout} s")


def test_writes_through_each_node_are_read_on_every_node(cluster) -> None:
    group = cluster(3)

    async def scenario() -> None:
        clients = [await nats.connect(url) for url in group.urls]
        try:
            address = (await request(clients[0], "$mq9.AI.MAILBOX.CREATE", b"{}"))["mail_address"]
            sent: dict[int, bytes] = {}
            for i, nc in enumerate(clients):
                for payload in make_payloads(3, tag=f"node{i}"):
                    sent[(await request(nc, subject(address, payload_level(payload)), payload))["msg_id"]] = payload
            for url in group.urls:
                await assert_serves(url, address, sent)
        finally:
            for nc in clients:
                await nc.close()

    run(scenario())


def check_delivered(producers: list[Producer], got: dict[int, bytes], payloads: list[bytes]) -> None:
    """Every ack delivered with its payload; a send acked at its first attempt stored exactly once.

    A retried send may be stored twice: its failed attempt's outcome was unknown, and the error
    said so ("outcome unknown ... retry").
    """
    for producer in producers:
        assert all(got.get(msg_id) == payload for payload, msg_id in producer.acked.items())
    copies = Counter(got.values())
    retried = set().union(*(p.retried() for p in producers))
    assert all(copies[p] == 1 for p in payloads if p not in retried)
    assert set(copies) <= set(payloads)


def test_leader_kill_under_load_loses_no_acked_send(cluster) -> None:
    group = cluster(3)
    leader = group.wait_leader()
    producer_node, reader_node = others(group, leader)

    async def scenario() -> None:
        # One producer on a follower, one on the leader that fails over to the others (nats-py
        # connected to all servers), a live reader on the third node.
        pnc = await nats.connect(producer_node.url)
        lnc = await nats.connect(servers=[leader.url, producer_node.url, reader_node.url], dont_randomize=True,
                                 reconnect_time_wait=0.1, max_reconnect_attempts=-1)
        rnc = await nats.connect(reader_node.url)
        try:
            address = (await request(pnc, "$mq9.AI.MAILBOX.CREATE", b"{}"))["mail_address"]
            live = await subscribe(rnc, address)
            producers = [Producer(pnc, address), Producer(lnc, address)]
            payloads = [make_payloads(900, tag="follower"), make_payloads(900, tag="leader")]
            sending = asyncio.gather(*(p.run(load) for p, load in zip(producers, payloads)))
            await until(lambda: min(len(p.acked) for p in producers) >= 150, "150 acks each before the kill")
            killed_at = time.monotonic()
            leader.kill()
            _, elected = await to_thread(wait_leader_among, [producer_node, reader_node])
            await asyncio.wait_for(sending, 45)
            resumed = producers[0].resumed_after(killed_at)
            print(f"\nfailover: new leader elected {elected:.2f} s and writes resumed {resumed:.2f} s after the kill")
            for name, p in zip(("via follower", "via killed leader"), producers):
                print(f"  {name}: {len(p.errors)} error replies, {p.timeouts} timeouts, {len(p.retried())} sends "
                      f"retried; errors seen: {sorted(set(p.errors))}")
            assert resumed < FAILOVER_BOUND
            assert all("retry" in error for p in producers for error in p.errors)
            assert producers[0].timeouts == 0, "a request through a live node went unanswered"

            everything = payloads[0] + payloads[1]
            acked = set().union(*(p.acked.values() for p in producers))
            await until(lambda: acked <= set(live.by_id()), "live delivery of every ack")
            got = live.by_id()
            assert len(got) == len(live.got), "a msg_id delivered twice live"
            check_delivered(producers, got, everything)
            print(f"  stored {len(got)} for {len(everything)} sends: "
                  f"{len(got) - len(set(got.values()))} extra copies from retries")

            await to_thread(group.wait_applied)
            for node in (producer_node, reader_node):
                await assert_serves(node.url, address, got)

            # The killed node comes back on its data dir, catches up without applying anything
            # twice and serves everything.
            restarted_at = time.monotonic()
            await to_thread(leader.start)
            await to_thread(group.wait_applied)
            print(f"  restarted node caught up in {time.monotonic() - restarted_at:.2f} s")
            await assert_serves(leader.url, address, got)
        finally:
            for nc in (pnc, lnc, rnc):
                await nc.close()

    run(scenario())


def test_fire_and_forget_sends_are_never_applied_twice(cluster) -> None:
    group = cluster(3)
    leader = group.wait_leader()
    sender_node, reader_node = others(group, leader)

    async def scenario() -> None:
        snc = await nats.connect(sender_node.url)
        try:
            address = (await request(snc, "$mq9.AI.MAILBOX.CREATE", b"{}"))["mail_address"]
            payloads = make_payloads(1500, tag="nowait")
            for i, payload in enumerate(payloads):
                await snc.publish(subject(address, payload_level(payload)), payload)
                if i % 50 == 49:
                    await snc.flush()
                    await asyncio.sleep(0.05)  # 1500 sends over about 1.5 s: across the election
                if i == 300:
                    leader.kill()
            await snc.flush()
            await to_thread(group.wait_leader)
            # An acked send after every fire-and-forget one: group commit keeps their order.
            last = await request(snc, subject(address, "normal"), b"normal-marker")
            assert "msg_id" in last, last
            await to_thread(group.wait_applied)
            stored = await list_ids(snc, address)
            got = await replay(reader_node.url, address, len(stored))
            copies = Counter(d.payload for d in got)
            print(f"\nfire-and-forget: {len(payloads)} sent, {len(copies) - 1} stored, "
                  f"{len(payloads) + 1 - len(copies)} lost in the failover")
            assert max(copies.values()) == 1, [p for p, n in copies.items() if n > 1][:5]
            assert set(copies) <= set(payloads) | {b"normal-marker"}
        finally:
            await snc.close()

    run(scenario())


@contextlib.contextmanager
def paused(*nodes: Broker):
    """SIGSTOP ``nodes`` (their sockets stay open, they answer nothing) and SIGCONT them at the end."""
    for node in nodes:
        node.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for node in nodes:
            node.signal(signal.SIGCONT)


async def refused(nc, subject_: str, body: bytes = b"") -> tuple[str, float]:
    """The error a request gets, and how long it took; fails on success or on no answer."""
    started = time.monotonic()
    reply = await request(nc, subject_, body, timeout=REFUSAL_BOUND)
    assert set(reply) == {"error"} and "retry" in reply["error"], reply
    return reply["error"], time.monotonic() - started


@pytest.mark.parametrize("cut_off", ["leader", "follower"])
def test_a_cut_off_node_refuses_reads_and_writes_then_serves_fresh_data(cluster, cut_off: str) -> None:
    group = cluster(3)
    leader = group.wait_leader()
    node = leader if cut_off == "leader" else others(group, leader)[0]

    async def scenario() -> None:
        nc = await nats.connect(node.url)
        try:
            address = (await request(nc, "$mq9.AI.MAILBOX.CREATE", b"{}"))["mail_address"]
            assert "msg_id" in await request(nc, subject(address, "urgent"), b"urgent-before")
            listing = f"$mq9.AI.MAILBOX.LIST.{address}"
            refusals: dict[bytes, str] = {}
            with paused(*others(group, node)):
                # Sent the moment the node is cut off: refused once it knows it has no leader.
                (list_error, list_took), (send_error, send_took) = await asyncio.gather(
                    refused(nc, listing), refused(nc, subject(address, "critical"), b"critical-at-cut"))
                refusals[b"critical-at-cut"] = send_error
                # Sent once it knows: refused at once.
                _, list_again = await refused(nc, listing)
                refusals[b"critical-later"], send_again = await refused(nc, subject(address, "critical"),
                                                                        b"critical-later")
                role = node.http_json("/raftz")["role"]
                sub = await subscribe(nc, address)
                await asyncio.sleep(0.3)
                assert sub.got == [], "a replay served by a node without a quorum"
            print(f"\ncut-off {cut_off} (now {role}): LIST refused after {list_took:.2f} s, send after "
                  f"{send_took:.2f} s, then at once ({list_again:.3f} s, {send_again:.3f} s); "
                  f"errors: {list_error!r}, {send_error!r}")
            assert role != "leader"
            assert max(list_again, send_again) < 1.0
            assert refusals[b"critical-later"].startswith("not committed"), refusals

            await to_thread(group.wait_leader)
            # Healed: the replay that waited is served, and a refused send is never applied later.
            await until(lambda: any(d.payload == b"urgent-before" for d in sub.got), "the waiting replay")
            await to_thread(group.wait_applied)
            stored = {d.payload for d in await replay(node.url, address, len(await list_ids(nc, address)))}
            for payload, error in refusals.items():
                if error.startswith("not committed"):
                    assert payload not in stored, f"{payload!r} was refused ({error}) but applied later"
        finally:
            await nc.close()

    run(scenario())


def test_paused_leader_does_not_serve_stale_reads_when_resumed(cluster) -> None:
    group = cluster(3)
    old = group.wait_leader()
    survivor, _ = others(group, old)

    async def scenario() -> None:
        onc = await nats.connect(old.url)
        snc = await nats.connect(survivor.url)
        try:
            address = (await request(onc, "$mq9.AI.MAILBOX.CREATE", b"{}"))["mail_address"]
            with paused(old):
                await to_thread(wait_leader_among, others(group, old))
                fresh = (await request(snc, subject(address, "normal"), b"normal-after-pause"))["msg_id"]
                # Queued in the paused node's socket: read the moment it resumes, while it may still
                # believe it leads. (No flush: the paused node would not answer its PING.)
                listing = asyncio.ensure_future(request(onc, f"$mq9.AI.MAILBOX.LIST.{address}", timeout=REFUSAL_BOUND))
                sub = Reader()
                await onc.subscribe(f"$mq9.AI.MAILBOX.{address}.*", cb=sub.on_msg)
                await asyncio.sleep(0.2)
            reply = await listing
            print(f"\nLIST on the resumed old leader: {reply}")
            if "error" in reply:
                assert "retry" in reply["error"]
            else:
                assert fresh in [m["msg_id"] for m in reply["messages"]], "stale LIST"
            await until(lambda: [d.payload for d in sub.got] == [b"normal-after-pause"], "fresh replay", timeout=5)
        finally:
            await onc.close()
            await snc.close()

    run(scenario())

