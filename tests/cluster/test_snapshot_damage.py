"""A damaged snapshot file is never sent to a follower, and a bad transfer never stops one.

Three real nodes that compact their log every 50 entries. The leader's snapshot file is damaged
(while it is stopped, or under it while it runs); a follower that lost its data dir can then only
come back from the leader's snapshot, and must get a good one: every acknowledged message is
replayed on it. The receiving side is checked on real files through the serializer itself.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pysyncobj import SyncObjConf

from mq9cluster.cluster import admin
from mq9cluster.cluster.raft import _CheckedSerializer, _snapshot_meta, write_snapshot_file
from tests.cluster.test_snapshot_install import (
    SNAPSHOT_EVERY, fill_and_compact, follower_of, raftz, replay_on, wait_caught_up)
from tests.support.broker import Broker
from tests.support.cluster import Cluster
from tests.support.nats_client import run

pytestmark = pytest.mark.timeout(180)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_bits(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for offset in (len(data) // 3, len(data) // 2):  # inside the state, past the metadata
        data[offset] ^= 0x24
    path.write_bytes(bytes(data))


def make_leader(group: Cluster, node: Broker, timeout: float = 30.0) -> None:
    """Hand leadership to ``node`` (Raft TimeoutNow through the utility port)."""
    deadline = time.monotonic() + timeout
    while (leader := group.wait_leader()) is not node:
        assert time.monotonic() < deadline, f"{node.raft_addr} did not become leader"
        admin.call(leader.raft_addr, ["transfer", node.raft_addr])
        time.sleep(1.0)


def rebuild_from_leader(group: Cluster, node: Broker) -> None:
    node.stop()
    shutil.rmtree(node.data_dir)
    node.start()
    wait_caught_up(group, node)
    assert raftz(node)["snapshots_installed"] == 1, raftz(node)


@pytest.mark.parametrize("damage", [truncate, flip_bits], ids=["truncated", "bit-flipped"])
def test_a_snapshot_damaged_while_stopped_is_rewritten_at_start_and_a_good_one_is_sent(
        cluster, damage: Callable[[Path], None]) -> None:
    group = cluster(3, *SNAPSHOT_EVERY)
    leader, follower = follower_of(group)
    address, acked = fill_and_compact(group, leader, "snap.damaged")
    group.wait_applied()
    leader.stop()
    damage(leader.data_dir / "raft" / "snapshot")
    leader.start()  # its store is past the snapshot: it starts, and must not trust the file
    wait_caught_up(group, leader)
    assert "snapshot at index" in leader.output() and "is damaged" in leader.output()
    assert "replaced by one rewritten from the store" in leader.output()
    make_leader(group, leader)

    rebuild_from_leader(group, follower)
    run(replay_on(follower, address, acked))
    assert all(node.proc.poll() is None for node in group.nodes)


def test_a_snapshot_damaged_under_a_running_leader_is_not_sent(cluster) -> None:
    group = cluster(3, *SNAPSHOT_EVERY)
    leader, follower = follower_of(group)
    address, acked = fill_and_compact(group, leader, "snap.rotted")
    group.wait_applied()
    flip_bits(leader.data_dir / "raft" / "snapshot")  # in place, while it runs

    rebuild_from_leader(group, follower)
    assert "not sending this node's snapshot to a follower" in leader.output()
    assert "replaced by one rewritten from the store" in leader.output()
    assert "failed verification" not in follower.output()  # nothing bad ever reached it
    run(replay_on(follower, address, acked))


# -- the receiving side, on real files -------------------------------------------------------------

def snapshot_bytes(tmp_path: Path, state: bytes) -> bytes:
    path = tmp_path / "made"
    meta = _snapshot_meta((b"x", 12, 3), (b"y", 11, 3), ["127.0.0.1:1"], 12)
    write_snapshot_file(str(path), meta, lambda out: out.write(state))
    return path.read_bytes()


def receive(serializer: _CheckedSerializer, data: bytes, chunk: int = 1000) -> list[bool]:
    """Feed ``data`` as pysyncobj's leader sends a file: chunks, then an empty last one."""
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]
    return [serializer.setTransmissionData((piece, i == 0, piece == b""))
            for i, piece in enumerate(pieces)]


@pytest.mark.parametrize("damage", [truncate, flip_bits], ids=["truncated", "bit-flipped"])
def test_a_bad_transfer_is_put_aside_and_the_next_good_one_is_taken(
        tmp_path: Path, damage: Callable[[Path], None]) -> None:
    final = tmp_path / "snapshot"
    own = snapshot_bytes(tmp_path, b"the follower's own state" * 100)
    final.write_bytes(own)
    serializer = _CheckedSerializer(SyncObjConf(fullDumpFile=str(final)), sendable=lambda: True)

    good = snapshot_bytes(tmp_path, bytes(range(256)) * 40)
    bad_file = tmp_path / "bad"
    bad_file.write_bytes(good)
    damage(bad_file)
    assert not any(receive(serializer, bad_file.read_bytes()))
    assert final.read_bytes() == own  # not a byte of it in place, so nothing can load it
    assert (tmp_path / "snapshot.rejected").read_bytes() == bad_file.read_bytes()
    assert not (tmp_path / "snapshot.1.tmp").exists()

    taken = receive(serializer, good)
    assert taken[-1] and not any(taken[:-1])
    assert final.read_bytes() == good


def test_a_transfer_joined_in_the_middle_is_ignored(tmp_path: Path) -> None:
    final = tmp_path / "snapshot"
    serializer = _CheckedSerializer(SyncObjConf(fullDumpFile=str(final)), sendable=lambda: True)
    good = snapshot_bytes(tmp_path, b"state" * 1000)
    assert not any(serializer.setTransmissionData((good[1000:], False, False)) for _ in range(2))
    assert not serializer.setTransmissionData((b"", False, True))
    assert not final.exists()
