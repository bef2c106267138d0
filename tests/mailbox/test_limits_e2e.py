"""Mailbox limits through a real broker: a full mailbox answers sends with an error; what it
stored stays deliverable."""

from __future__ import annotations

from tests.support.nats_client import collect, connect, create, request, run, until


def test_full_mailbox_rejects_sends_and_drops_nothing(mq9):
    broker = mq9("--mailbox-max-bytes", "100")

    async def scenario():
        nc = await connect(broker)
        address = await create(nc)
        acks = [await request(nc, f"$mq9.AI.MAILBOX.{address}", b"%02d" % i + b"x" * 18) for i in range(6)]
        assert [set(ack) for ack in acks[:5]] == [{"msg_id"}] * 5
        assert "is full" in acks[5]["error"]
        got = await collect(nc, f"$mq9.AI.MAILBOX.{address}.*")
        await until(lambda: len(got) == 5, "the stored messages")
        assert [m.data[:2] for m in got] == [b"00", b"01", b"02", b"03", b"04"]
        other = await create(nc)
        assert set(await request(nc, f"$mq9.AI.MAILBOX.{other}", b"fits")) == {"msg_id"}
        await nc.close()

    run(scenario())


def test_mailbox_count_and_node_storage_limits(mq9):
    broker = mq9("--max-mailboxes", "2", "--max-stored-bytes", "50")

    async def scenario():
        nc = await connect(broker)
        first, second = await create(nc), await create(nc)
        third = await request(nc, "$mq9.AI.MAILBOX.CREATE", b"{}")
        assert "too many mailboxes" in third["error"]
        assert "msg_id" in await request(nc, f"$mq9.AI.MAILBOX.{first}", b"a" * 30)
        assert "msg_id" in await request(nc, f"$mq9.AI.MAILBOX.{second}", b"b" * 20)
        full = await request(nc, f"$mq9.AI.MAILBOX.{second}", b"c")
        assert "storage is full" in full["error"]
        got = await collect(nc, f"$mq9.AI.MAILBOX.{first}.*")
        await until(lambda: len(got) == 1, "the stored message")
        await nc.close()

    run(scenario())


def test_dialect3_send_to_a_full_mailbox_answers_an_error_and_drops_nothing(mq9):
    broker = mq9("--mailbox-max-bytes", "100")

    async def scenario():
        nc = await connect(broker)
        address = await create(nc)
        send = f"$mq9.AI.MSG.SEND.{address}"
        acks = [await request(nc, send, b"%02d" % i + b"x" * 18) for i in range(5)]
        assert [ack["error"] for ack in acks] == [""] * 5 and all(ack["msg_id"] > 0 for ack in acks)
        full = await request(nc, send, b"one too many")
        assert "is full" in full["error"] and "msg_id" not in full
        fetched = await request(nc, f"$mq9.AI.MSG.FETCH.{address}", b'{"config": {"max_wait_ms": 0}}')
        assert [m["payload"][:2] for m in fetched["messages"]] == ["00", "01", "02", "03", "04"]
        await nc.close()

    run(scenario())
