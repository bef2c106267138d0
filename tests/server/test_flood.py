"""Flood: 2,000 idle connections, a subscriber that never reads, and a client sending 1 MB garbage
lines over and over. A well-behaved client's mailbox sends keep their p99 latency within 2x of
the quiet figure, and every acknowledged message is still there afterwards.

Prints the figures (quiet and flood p99, connections, cuts) for the issue note.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import threading
import time

import pytest

from tests.support.nats_client import collect, connect, create, request, run, until

pytestmark = pytest.mark.timeout(300)

IDLE_CONNECTIONS = 2000
SENDS = 1000  # per phase: a p99 of 1,000 samples is the 10th highest, steadier than a handful
BACKLOG = 1500  # 4 KB messages the never-reading subscriber is replayed (6 MB)


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that complete the handshake, then sit idle."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        got = b""
        while b"PONG\r\n" not in got:
            chunk = s.recv(4096)
            assert chunk, "an idle connection was closed during the handshake"
            got += chunk
        socks.append(s)
    return socks


def garbage_lines(port: int, stop: threading.Event, counts: dict) -> None:
    """Reconnect and send 1 MB garbage lines until ``stop``; count lines and server closes."""
    line = os.urandom(1 << 20).replace(b"\n", b"x") + b"\r\n"
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                while not stop.is_set():
                    s.sendall(line)
                    counts["lines"] += 1
        except OSError:
            counts["closed"] += 1
            time.sleep(0.01)


def never_reader(port: int, address: str) -> socket.socket:
    """A subscriber to the busy mailbox (replayed the backlog) that never reads a byte."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n'
              + f"SUB $mq9.AI.MAILBOX.{address}.* 1\r\n".encode())
    return s


async def timed_sends(nc, address: str, count: int, tag: str) -> tuple[list[float], list[int]]:
    """Send ``count`` messages one after another; latencies (ms) and acknowledged msg_ids."""
    latencies, acked = [], []
    for i in range(count):
        started = time.perf_counter()
        ack = await request(nc, f"$mq9.AI.MAILBOX.{address}", f"{tag}-{i}".encode())
        latencies.append((time.perf_counter() - started) * 1000)
        assert "msg_id" in ack, ack
        acked.append(ack["msg_id"])
    return latencies, acked


def test_flood_leaves_other_clients_unharmed(mq9):
    broker = mq9("--max-pending", "1048576", "--write-deadline", "1", "--max-connections", "5000")
    stop, counts = threading.Event(), {"lines": 0, "closed": 0}

    async def scenario():
        nc = await connect(broker)
        address = await create(nc)
        for i in range(BACKLOG):
            await nc.publish(f"$mq9.AI.MAILBOX.{address}", b"b" * 4096)
        await nc.flush()
        await timed_sends(nc, address, 50, "warm")
        quiet, acked_quiet = await timed_sends(nc, address, SENDS, "quiet")

        idle = await asyncio.to_thread(open_idle, broker.port, IDLE_CONNECTIONS)
        stuck = never_reader(broker.port, address)
        flooder = threading.Thread(target=garbage_lines, args=(broker.port, stop, counts), daemon=True)
        flooder.start()
        await asyncio.sleep(0.5)
        try:
            loud, acked_loud = await timed_sends(nc, address, SENDS, "flood")
            varz = broker.http_json("/varz")
        finally:
            stop.set()
            flooder.join(10)
            stuck.close()
            for s in idle:
                s.close()

        got = await collect(nc, f"$mq9.AI.MAILBOX.{address}.*")
        wanted = set(acked_quiet + acked_loud)
        await until(lambda: wanted <= {int(m.headers["mq9-msg-id"]) for m in got}, "every acked message", 30)
        await nc.close()
        return quiet, loud, varz

    quiet, loud, varz = run(scenario())
    figures = (f"flood figures: quiet p50 {statistics.median(quiet):.2f} ms p99 {p99(quiet):.2f} ms; "
               f"flood p50 {statistics.median(loud):.2f} ms p99 {p99(loud):.2f} ms; "
               f"connections during flood {varz['connections']}; slow consumers cut {varz['slow_consumers']}; "
               f"garbage lines sent {counts['lines']}, garbage connections closed {counts['closed']}")
    print(figures)
    assert varz["connections"] >= IDLE_CONNECTIONS
    assert counts["closed"] >= 1  # the garbage client was being cut, again and again
    # 2x the quiet p99, with 1 ms of slack for a sub-millisecond quiet figure on a shared machine.
    assert p99(loud) <= 2 * p99(quiet) + 1.0, figures
