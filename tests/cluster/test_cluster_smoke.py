"""A three-node cluster on loopback: writes through any node are read on every other."""

from __future__ import annotations

import asyncio
import json

import nats

from tests.support.nats_client import ORDER, collect, connect, create, run, until


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


def test_queue_group_with_members_on_three_nodes_gets_each_message_once(cluster) -> None:
    group = cluster(3)

    async def scenario() -> None:
        clients = [await connect(node) for node in group.nodes]
        try:
            address = await create(clients[0], public=True, name="jobs.spread")
            backlog = [clients[0].request(f"$mq9.AI.MAILBOX.{address}", b"early-%d" % i, timeout=10)
                       for i in range(200)]
            await asyncio.gather(*backlog)  # stored before any worker exists
            inboxes = [await collect(client, f"$mq9.AI.MAILBOX.{address}.*", queue="workers")
                       for client in clients for _ in range(2)]  # two workers on each node
            sends = [clients[i % 3].request(f"$mq9.AI.MAILBOX.{address}.{ORDER[i % 3]}", b"live-%d" % i, timeout=10)
                     for i in range(800)]
            acks = [json.loads(reply.data) for reply in await asyncio.gather(*sends)]
            assert all("msg_id" in ack for ack in acks), acks
            await until(lambda: sum(map(len, inboxes)) >= 1000, "1000 deliveries to the group")
            await asyncio.sleep(0.5)  # a duplicate would arrive now
            ids = [int(m.headers["mq9-msg-id"]) for inbox in inboxes for m in inbox]
            assert sorted(ids) == list(range(1, 1001))
            per_node = [sum(len(inboxes[2 * n + k]) for k in range(2)) for n in range(3)]
            print("deliveries per node", per_node)
            assert sum(1 for count in per_node if count) >= 2  # not all on one node
        finally:
            for client in clients:
                await client.close()

    run(scenario())
