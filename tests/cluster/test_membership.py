"""Membership on real processes: `mq9cluster join`, `leave` and `status` against a running 3-node cluster."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

from tests.support.broker import Broker, mq9cluster_command
from tests.support.cluster import Cluster
from tests.support.nats_client import connect, collect, create, request, run, until


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*mq9cluster_command(), *args], capture_output=True, text=True, timeout=60)


def status(seed: Broker) -> dict[str, dict]:
    done = cli("status", "--seed", seed.raft_addr, "--json")
    return {row["address"]: row for row in json.loads(done.stdout)["members"]}


def wait_caught_up(group: Cluster, node: Broker, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    target = group.raft_status(group.wait_leader())["commit_index"]
    while (group.raft_status(node) or {}).get("last_applied", 0) < target:
        assert time.monotonic() < deadline, f"{node.raft_addr} did not catch up to {target}"
        time.sleep(0.05)


def test_join_then_lose_two_original_members_then_leave(cluster, tmp_path) -> None:
    group = cluster(3)
    a, b, c = group.nodes

    async def write() -> str:
        nc = await connect(a)
        address = await create(nc, public=True, name="ops.kept", desc="survives")
        for i in range(60):
            level = ["critical", "urgent", "normal"][i % 3]
            assert "msg_id" in await request(nc, f"$mq9.AI.MAILBOX.{address}.{level}", b"m%d" % i)
        await nc.close()
        return address

    address = run(write())

    # join a fourth node through a follower's Raft address (and one seed route): it catches up,
    # meshes with every node and then serves reads
    d = Broker("mq9cluster", tmp_path, subcommand="join")
    d.extra_args = ["--seed", b.raft_addr, "--node-id", "d", "--cluster", d.cluster_addr, "--routes", b.cluster_addr]
    d.start()
    group.nodes.append(d)
    wait_caught_up(group, d)
    group.wait_routes()
    members = status(a)
    assert sorted(members) == sorted(n.raft_addr for n in (a, b, c, d))
    assert all(row["lag"] == 0 and row["role"] in ("leader", "follower") for row in members.values()), members
    assert [row["address"] for row in members.values() if row["role"] == "leader"] == [group.wait_leader().raft_addr]

    # kill -9 two of the original three; bring one back with an empty data dir: 3 of 4 make a
    # quorum again and the data it serves can only have come from the survivors' copies
    a.kill()
    b.kill()
    shutil.rmtree(a.data_dir)
    a.start()
    group.wait_leader(timeout=20)

    async def read_back() -> None:
        for node in (d, a):
            nc = await connect(node)
            inbox = await collect(nc, f"$mq9.AI.MAILBOX.{address}.*")
            await until(lambda: len(inbox) == 60, f"60 replayed messages on {node.raft_addr}", timeout=20)
            levels = [m.headers["mq9-priority"] for m in inbox]
            assert levels == ["critical"] * 20 + ["urgent"] * 20 + ["normal"] * 20
            ids = [int(m.headers["mq9-msg-id"]) for m in inbox]
            assert len(set(ids)) == 60
            await nc.close()

    run(read_back())

    # leave: the dead member is removed through a live one; the remaining three take writes
    done = cli("leave", "--raft-addr", b.raft_addr, "--seed", c.raft_addr)
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout
    group.nodes.remove(b)
    assert sorted(status(c)) == sorted(n.raft_addr for n in (a, c, d))

    async def write_after() -> None:
        nc = await connect(d)
        assert "msg_id" in await request(nc, f"$mq9.AI.MAILBOX.{address}", b"after leave")
        await nc.close()

    run(write_after())


def test_leaving_leader_hands_over_first_and_status_flags_unreachable(cluster) -> None:
    group = cluster(3)
    leader = group.wait_leader()
    done = cli("leave", "--raft-addr", leader.raft_addr)
    assert done.returncode == 0, done.stderr
    rest = [n for n in group.nodes if n is not leader]
    new_leader = group.raft_status(rest[0])["leader"]
    assert new_leader in {n.raft_addr for n in rest}
    leader.stop()
    group.nodes.remove(leader)
    assert sorted(status(rest[0])) == sorted(n.raft_addr for n in rest)

    rest[1].kill()
    done = cli("status", "--seed", rest[0].raft_addr)
    assert done.returncode == 1  # a member did not answer
    assert "unreachable" in done.stdout and rest[1].raft_addr in done.stdout


def test_admin_commands_fail_clearly_without_a_cluster() -> None:
    done = cli("status", "--seed", "127.0.0.1:1")
    assert done.returncode == 1 and "127.0.0.1:1" in done.stderr and "Traceback" not in done.stderr
    done = cli("leave", "--raft-addr", "127.0.0.1:1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    done = cli("join", "--seed", "127.0.0.1:1", "--data-dir", "/tmp/never-used", "-p", "0", "-m", "0")
    assert done.returncode == 2 and "127.0.0.1:1" in done.stderr and "Traceback" not in done.stderr


def test_two_nodes_join_at_once_through_a_list_of_seeds(cluster, tmp_path) -> None:
    group = cluster(3)
    a, b, _ = group.nodes
    # the first seed never answers; both nodes ask at once, so one addition waits for the other's
    seeds = f"127.0.0.1:1,{b.raft_addr},{a.raft_addr}"
    joiners = [Broker("mq9cluster", tmp_path, ["--seed", seeds, "--join-wait", "30", "--node-id", f"j{i}"],
                      subcommand="join") for i in range(2)]
    for joiner in joiners:
        joiner.start()
        group.nodes.append(joiner)
    for joiner in joiners:  # ready: a member that knows the leader and has caught up
        deadline = time.monotonic() + 20
        while True:
            try:
                assert joiner.http_json("/readyz")["status"] == "ready"
                break
            except OSError:  # 503 until then
                assert time.monotonic() < deadline, joiner.output()
                time.sleep(0.05)
    members = status(a)
    assert sorted(members) == sorted(n.raft_addr for n in group.nodes)
    assert all(row["role"] in ("leader", "follower") for row in members.values()), members


def test_a_leave_without_a_quorum_is_unknown_and_a_retry_converges(cluster) -> None:
    group = cluster(3)
    leader = group.wait_leader()
    down, leaving = [n for n in group.nodes if n is not leader]
    down.stop()  # the leader keeps its quorum through `leaving`, until the removal is appended:
    # from then on it needs `down`, the one other member left, to commit anything
    done = cli("leave", "--raft-addr", leaving.raft_addr, "--seed", leader.raft_addr)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "outcome unknown" in done.stderr and "run this command again" in done.stderr
    assert "Traceback" not in done.stderr
    leaving.stop()  # as an operator would: it may be out of the cluster already

    down.start()  # a quorum again: the leader's log is the longer one, so it leads and commits
    group.wait_leader(timeout=20)
    done = cli("leave", "--raft-addr", leaving.raft_addr, "--seed", leader.raft_addr)
    assert done.returncode == 0, done.stderr
    assert "not a member" in done.stdout and "nothing to do" in done.stdout
    group.nodes.remove(leaving)
    assert sorted(status(down)) == sorted([leader.raft_addr, down.raft_addr])

    async def write_after() -> None:
        nc = await connect(down)
        await create(nc, public=True, name="ops.after.unknown")
        await nc.close()

    run(write_after())


def test_leave_of_a_non_member_and_join_of_a_member_change_nothing(cluster) -> None:
    from mq9cluster.cluster import admin

    group = cluster(3)
    a, b, _ = group.nodes
    done = cli("leave", "--raft-addr", "127.0.0.1:1", "--seed", a.raft_addr)
    assert done.returncode == 0, done.stderr
    assert "127.0.0.1:1 is not a member" in done.stdout
    assert admin.add_member(a.raft_addr, b.raft_addr) is False  # already one: nothing proposed
    assert sorted(status(a)) == sorted(n.raft_addr for n in group.nodes)
