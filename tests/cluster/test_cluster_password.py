"""--cluster-password: Raft traffic is encrypted and authenticated, so a pickle sent to the Raft
port by someone without the password is dropped before pysyncobj unpickles it."""

from __future__ import annotations

import json
import pickle
import socket
import struct
import subprocess
import time
import zlib

from tests.support.broker import mq9cluster_command
from tests.support.nats_client import connect, create, request, run


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*mq9cluster_command(), *args], capture_output=True, text=True, timeout=60)


class _Touch:
    """Unpickling this creates ``path``: the attack the password closes."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def send_pickle(raft_addr: str, obj: object) -> None:
    """One frame as pysyncobj reads it: a length, then zlib(pickle(obj))."""
    host, port = raft_addr.rsplit(":", 1)
    data = zlib.compress(pickle.dumps(obj))
    with socket.create_connection((host, int(port)), timeout=3) as sock:
        sock.sendall(struct.pack("i", len(data)) + data)
        time.sleep(0.5)


def test_without_a_password_the_raft_port_unpickles_anything(mq9, tmp_path):
    broker = mq9()
    target = tmp_path / "pwned-open"
    send_pickle(broker.raft_addr, _Touch(str(target)))
    deadline = time.monotonic() + 3
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert target.exists()  # the hole --cluster-password closes (see docs/security.md)


def test_with_a_password_a_forged_pickle_is_dropped_and_admin_needs_the_password(mq9, tmp_path):
    broker = mq9("--cluster-password", "correct horse")
    target = tmp_path / "pwned-closed"
    send_pickle(broker.raft_addr, _Touch(str(target)))
    time.sleep(0.5)
    assert not target.exists()

    async def still_serves():
        nc = await connect(broker)
        address = await create(nc)
        assert "msg_id" in await request(nc, f"$mq9.AI.MAILBOX.{address}", b"after the attempt")
        await nc.close()

    run(still_serves())
    done = cli("status", "--seed", broker.raft_addr, "--json", "--cluster-password", "correct horse")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["members"][0]["role"] == "leader"
    for wrong in ([], ["--cluster-password", "wrong"]):
        done = cli("status", "--seed", broker.raft_addr, *wrong)
        assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--cluster-password" in cli("status", "--seed", broker.raft_addr).stderr


def test_three_nodes_with_a_password_replicate(cluster):
    group = cluster(3, "--cluster-password", "shared")
    leader = group.wait_leader()

    async def write():
        nc = await connect(leader)
        address = await create(nc)
        ack = await request(nc, f"$mq9.AI.MAILBOX.{address}", b"encrypted raft")
        assert "msg_id" in ack
        await nc.close()

    run(write())
    target = group.raft_status(leader)["commit_index"]
    deadline = time.monotonic() + 15
    for node in group.nodes:
        while (group.raft_status(node) or {}).get("last_applied", 0) < target:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_join_and_leave_with_the_password(mq9, tmp_path):
    from tests.support.broker import Broker

    seed = mq9("--cluster-password", "shared", "--node-id", "first")
    joiner = Broker("mq9cluster", tmp_path, ["--seed", seed.raft_addr, "--join-wait", "20", "--node-id", "second",
                                             "--cluster-password", "shared"], subcommand="join").start()
    try:
        deadline = time.monotonic() + 20
        while True:
            done = cli("status", "--seed", seed.raft_addr, "--json", "--cluster-password", "shared")
            rows = json.loads(done.stdout)["members"] if done.returncode == 0 else []
            if sorted(row["address"] for row in rows if row["role"] != "unreachable") == sorted(
                    [seed.raft_addr, joiner.raft_addr]):
                break
            assert time.monotonic() < deadline, joiner.output()
            time.sleep(0.2)
        done = cli("leave", "--raft-addr", joiner.raft_addr, "--seed", seed.raft_addr, "--cluster-password", "shared")
        assert done.returncode == 0, done.stderr
    finally:
        joiner.stop()


def test_a_node_that_is_down_is_not_blamed_on_the_password():
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    done = cli("status", "--seed", address)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "nothing answers there" in done.stderr and "--cluster-password" not in done.stderr, done.stderr
