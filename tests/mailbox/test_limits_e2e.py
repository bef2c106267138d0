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
