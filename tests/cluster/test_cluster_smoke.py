"""A three-node cluster on loopback: writes through any node are read on every other."""

from __future__ import annotations

import json

from tests.support.nats_client import run

import nats


def test_three_nodes_agree_and_serve_each_others_writes(cluster) -> None:
    group = cluster(3)
    leader = group.wait_leader()
    assert leader.http_json("/raftz")["role"] == "leader"

    async def scenario() -> None:
        clients = [await nats.connect(url) for url in group.urls]
        try:
            reply = await clients[1].request("$mq9.AI.MAILBOX.CREATE", b"{}", timeout=5)
            address = json.loads(reply.data)["mail_address"]
            for i, client in enumerate(clients):
                ack = json.loads((await client.request(f"$mq9.AI.MAILBOX.{address}", b"m%d" % i, timeout=5)).data)
                assert ack == {"msg_id": i + 1}
            for client in clients:
                listing = json.loads((await client.request(f"$mq9.AI.MAILBOX.LIST.{address}", b"", timeout=5)).data)
                assert [m["msg_id"] for m in listing["messages"]] == [1, 2, 3]
        finally:
            for client in clients:
                await client.close()

    run(scenario())
