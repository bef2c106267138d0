"""/metrics (Prometheus text format) and /healthz?ready: every metric moves when its traffic flows."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.interop.wire import WireClient
from tests.support.nats_client import connect, create, request, run, until


def scrape(broker) -> dict[str, float]:
    """Every sample of /metrics by name (histograms as _count/_sum/_bucket samples; a bucket's
    name carries its bound, e.g. ``mq9_raft_batch_ops_bucket{le=1.0}``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.http_port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = "".join(f"{{{k}={v}}}" for k, v in sample.labels.items())
            samples[sample.name + labels] = sample.value
    return samples


def moved(before: dict, after: dict, *names: str) -> list[str]:
    """The names whose value did not grow."""
    return [name for name in names if not after[name] > before[name]]


def test_metrics_move_with_core_and_mailbox_traffic(mq9):
    broker = mq9("--expiry-interval", "0.2")
    before = scrape(broker)

    async def traffic():
        nc = await connect(broker)
        sub = await nc.subscribe("plain")
        await nc.publish("plain", b"hello")
        await sub.next_msg(timeout=2)
        address = await create(nc)
        for i in range(5):
            ack = await request(nc, f"$mq9.AI.MAILBOX.{address}", f"m{i}".encode())
            assert "msg_id" in ack
        short = await request(nc, "$mq9.AI.MAILBOX.CREATE", b'{"ttl": 1}')
        assert "mail_address" in short
        await until(lambda: scrape(broker)["mq9_mailboxes_expired_total"] >= 1, "expiry", timeout=10)
        mid = scrape(broker)
        assert mid["mq9_connections"] == before["mq9_connections"] + 1
        assert mid["mq9_subscriptions"] >= 1
        await nc.close()

    run(traffic())
    after = scrape(broker)
    assert not moved(before, after,
                     "mq9_messages_in_total", "mq9_messages_out_total", "mq9_bytes_in_total",
                     "mq9_bytes_out_total", "mq9_connections_accepted_total", "mq9_raft_commit_index",
                     "mq9_raft_applied_index", "mq9_raft_proposals_total", "mq9_raft_fsync_seconds_count",
                     "mq9_raft_fsync_seconds_sum", "mq9_mailbox_op_ack_seconds_count",
                     "mq9_raft_batch_ops_count", "mq9_mailboxes_expired_total", "mq9_mailboxes",
                     "mq9_stored_messages", "mq9_stored_bytes")
    assert after["mq9_mailboxes"] == before["mq9_mailboxes"] + 1  # the one with a TTL expired
    assert after["mq9_stored_messages"] == before["mq9_stored_messages"] + 5
    assert after["mq9_stored_bytes"] == before["mq9_stored_bytes"] + 10
    assert after["mq9_raft_is_leader"] == 1
    assert after["mq9_raft_apply_lag"] == 0
    assert after["mq9_raft_term"] >= 1


def test_auth_failures_and_slow_consumers_are_counted(mq9):
    broker = mq9("--auth", "tok", "--max-pending", "65536", "--write-deadline", "0.5")
    before = scrape(broker)
    refused = WireClient(broker.port)
    refused.send(b'CONNECT {"auth_token": "wrong"}\r\n')
    refused.read_all_until_close()
    stuck = WireClient(broker.port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.handshake(auth_token="tok")
    stuck.send(b"SUB flood 1\r\nPING\r\n")
    assert stuck.read_line() == b"PONG\r\n"
    publisher = WireClient(broker.port)
    publisher.handshake(auth_token="tok")
    frame = b"PUB flood 1024\r\n" + b"x" * 1024 + b"\r\n"
    deadline = time.monotonic() + 10
    while scrape(broker)["mq9_slow_consumers_total"] == before["mq9_slow_consumers_total"]:
        assert time.monotonic() < deadline, "the stuck client was never cut"
        publisher.send(frame * 500)
        assert publisher.ping_pong()
    after = scrape(broker)
    assert after["mq9_auth_failures_total"] == before["mq9_auth_failures_total"] + 1
    assert after["mq9_slow_consumers_total"] == before["mq9_slow_consumers_total"] + 1


def test_healthz_ready_is_readyz(mq9):
    broker = mq9()
    assert broker.http_json("/healthz") == {"status": "ok"}
    deadline = time.monotonic() + 10
    while True:
        try:
            broker.http_json("/readyz")
            break
        except urllib.error.HTTPError:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.1)
    assert broker.http_json("/healthz?ready") == broker.http_json("/readyz")
    assert broker.http_json("/healthz?ready")["status"] == "ready"
