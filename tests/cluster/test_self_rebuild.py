"""Self-rebuild on real processes: a member restarted on damaged files reports it on /healthz,
moves them aside, has its peers remove it, joins again empty and replays every acknowledged
message; a node without peers (or with the rebuild turned off) wipes nothing and says why."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.cluster import Cluster
from tests.support.nats_client import collect, connect, create, request, run, until

MESSAGES = 90
LEVELS = ["critical", "urgent", "normal"]


def health(node: Broker) -> tuple[int, dict] | None:
    """``/healthz`` status and body, or None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/healthz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None


def flip_bit(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x10]))


def flip_bytes(path: Path, offset: int, count: int) -> None:
    for at in range(offset, offset + count):
        flip_bit(path, at)


def one_file(directory: Path, pattern: str) -> Path:
    found = sorted(directory.rglob(pattern), key=lambda p: p.stat().st_size)
    assert found, f"no {pattern} under {directory}"
    return found[-1]


# kind -> (file to damage under the data dir, how); each must make the node refuse its data
DAMAGE = {
    "journal": ("raft/journal", lambda p: flip_bit(p, 12 + 10)),  # the first record's header: a valid one follows
    "meta": ("raft/journal.meta", lambda p: flip_bit(p, 12)),  # inside the checksummed JSON
    "snapshot": ("raft/snapshot", lambda p: flip_bit(p, 20)),  # its metadata: found by Raft's first tick
    "sst": ("*.sst", lambda p: os.truncate(p, p.stat().st_size // 2)),
    # the data block holding the mailbox record: the file opens, a read of the block fails
    "sst-block": ("*.sst", lambda p: flip_bytes(p, p.read_bytes().index(b"rebuild.kept"), 16)),
    "manifest": ("MANIFEST-*", lambda p: os.truncate(p, 40)),
}


def damage(data_dir: Path, kind: str) -> Path:
    pattern, how = DAMAGE[kind]
    path = data_dir / pattern if "/" in pattern else one_file(data_dir / "store", pattern)
    how(path)
    return path


async def write(node: Broker) -> str:
    nc = await connect(node)
    address = await create(nc, public=True, name="rebuild.kept", desc="survives a rebuild")
    for i in range(MESSAGES):
        reply = await request(nc, f"$mq9.AI.MAILBOX.{address}.{LEVELS[i % 3]}", b"m%d" % i)
        assert "msg_id" in reply, reply
    await nc.close()
    return address


async def replay(node: Broker, address: str) -> list[str]:
    nc = await connect(node)
    inbox = await collect(nc, f"$mq9.AI.MAILBOX.{address}.*")
    await until(lambda: len(inbox) >= MESSAGES, f"{MESSAGES} replayed messages on {node.raft_addr}", timeout=20)
    await nc.close()
    return [m.data.decode() for m in inbox]


def wait_phase(node: Broker, phase: str, timeout: float) -> dict:
    """Poll /healthz until it answers 503 in ``phase``; that body."""
    deadline = time.monotonic() + timeout
    while (answer := health(node)) is None or answer[0] != 503 or answer[1]["phase"] != phase:
        assert node.proc.poll() is None, f"node exited ({node.proc.returncode}):\n{node.output()}"
        assert time.monotonic() < deadline, f"no {phase!r} after {timeout} s: {answer}\n{node.output()}"
        time.sleep(0.05)
    return answer[1]


def wait_rebuilt(node: Broker, timeout: float) -> list[dict]:
    """Poll /healthz until 200 after the node logged damage; every distinct 503 body seen on the way.
    (Damage in a snapshot is found by Raft's first tick, which may come after /healthz said 200.)"""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        assert node.proc.poll() is None, f"node exited ({node.proc.returncode}):\n{node.output()}"
        answer = health(node)
        if answer is not None and answer[0] == 200 and "this node's data is damaged" in node.output():
            return seen
        if answer is not None and answer[0] == 503 and answer[1] not in seen:
            seen.append(answer[1])
        assert time.monotonic() < deadline, f"not healthy after {timeout} s; seen {seen}:\n{node.output()}"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_follower_rebuilds_itself_from_its_peers(cluster, kind: str) -> None:
    group: Cluster = cluster(3, "--raft-snapshot-entries", "20")
    leader = group.wait_leader()
    address = run(write(leader))
    group.wait_applied()
    victim, other = [node for node in group.nodes if node is not leader]
    victim.stop()
    damaged = damage(victim.data_dir, kind)
    relative = damaged.relative_to(victim.data_dir)
    other.stop()  # no quorum: the removal must wait, which /healthz and the log must show

    victim.spawn()  # the same command as before
    waiting = wait_phase(victim, "asking the peers to remove this member", timeout=30)
    assert waiting["status"] == "rebuilding" and waiting["reason"], waiting
    deadline = time.monotonic() + 20
    while "has not removed" not in victim.output():
        assert time.monotonic() < deadline, victim.output()
        time.sleep(0.1)
    other.start()
    seen = wait_rebuilt(victim, timeout=60)

    assert all(body["status"] == "rebuilding" and body["reason"] for body in seen), seen
    assert {body["phase"] for body in seen} <= {"found damage", "moving the damaged data aside", "joining",
                                                "asking the peers to remove this member",
                                                "catching up from the leader"}, seen
    kept = [p for p in victim.data_dir.iterdir() if p.name.startswith("damaged-")]
    assert len(kept) == 1 and (kept[0] / relative).exists(), list(victim.data_dir.iterdir())
    assert not (victim.data_dir / "REBUILDING").exists()
    output = victim.output()
    steps = [f"damaged data moved aside to {kept[0]}", f"{victim.raft_addr} is out of the cluster",
             "joined the cluster through", "rebuilt from peers"]
    places = [output.find(step) for step in steps]
    assert -1 not in places and places == sorted(places), (places, output)  # in this order

    assert victim.raft_addr in group.raft_status(group.wait_leader())["peers"]
    got = run(replay(victim, address))
    assert sorted(got) == sorted(f"m{i}" for i in range(MESSAGES)), got
    assert got == [f"m{i}" for level in range(3) for i in range(level, MESSAGES, 3)]  # priority order

    group.wait_applied()  # and it is a member like any other: it takes part in commits
    run(write(next(node for node in group.nodes if node is not victim)))


def test_a_single_node_wipes_nothing_and_says_so(tmp_path) -> None:
    node = Broker("mq9cluster", tmp_path).start()
    run(write(node))
    node.stop()
    flip_bit(node.data_dir / "raft" / "journal.meta", 12)
    raft = node.data_dir / "raft"
    before = {p.name: p.read_bytes() for p in raft.iterdir()}

    node.spawn()
    status, body = _wait_answer(node)
    assert status == 503 and body["status"] == "damaged", body
    assert "checksum" in body["reason"] and "no peers" in body["phase"], body
    time.sleep(1.0)
    assert {p.name: p.read_bytes() for p in raft.iterdir()} == before  # nothing moved, nothing rewritten
    assert sorted(p.name for p in node.data_dir.iterdir()) == ["raft", "store"]
    with pytest.raises(OSError):  # no NATS listener
        urllib.request.urlopen(f"http://127.0.0.1:{node.port}/", timeout=1)
    node.signal(signal.SIGTERM)
    assert node.wait_exit(10) == 1
    assert "Restore the data dir" in node.output() and "not rebuilt" in node.output()


def test_rebuild_can_be_turned_off(tmp_path) -> None:
    node = Broker("mq9cluster", tmp_path, ["--peers", "127.0.0.1:1", "--no-auto-rebuild"]).start()
    node.stop()
    flip_bit(node.data_dir / "raft" / "journal.meta", 12)

    node.spawn()
    status, body = _wait_answer(node)
    assert status == 503 and body["status"] == "damaged" and "auto_rebuild is off" in body["phase"], body
    assert not [p for p in node.data_dir.iterdir() if p.name.startswith("damaged-")]
    node.stop()


def _wait_answer(node: Broker, timeout: float = 15.0) -> tuple[int, dict]:
    deadline = time.monotonic() + timeout
    while (answer := health(node)) is None:
        assert node.proc.poll() is None, node.output()
        assert time.monotonic() < deadline, node.output()
        time.sleep(0.05)
    return answer
