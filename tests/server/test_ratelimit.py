"""The token bucket, and the per-connection mailbox create rate through a real broker."""

from __future__ import annotations

from mq9cluster.server.ratelimit import TokenBucket
from tests.support.nats_client import connect, request, run


def test_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=2, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)  # one token back after half a second at 2/s
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # refills only to burst


def test_creates_over_the_rate_get_an_error_reply_per_connection(mq9):
    broker = mq9("--max-creates-per-second", "0.5")  # bursts of 5

    async def scenario():
        greedy, other = await connect(broker), await connect(broker)
        replies = [await request(greedy, "$mq9.AI.MAILBOX.CREATE", b"{}") for _ in range(7)]
        assert all("mail_address" in r for r in replies[:5])
        assert all("too many mailbox creates" in r["error"] for r in replies[5:])
        assert "mail_address" in await request(other, "$mq9.AI.MAILBOX.CREATE", b"{}")
        address = replies[0]["mail_address"]
        assert "msg_id" in await request(greedy, f"$mq9.AI.MAILBOX.{address}", b"sends are not limited")
        await greedy.close()
        await other.close()

    run(scenario())
