"""Durable mailbox sends from a raw-socket client: the broker's own ceiling, no client library.

Starts mq9cluster, creates a mailbox, keeps ``--in-flight`` PUB-with-reply frames outstanding
(refilled as acks arrive, written in one ``sendall`` per burst) and prints acked sends/s, median
over ``--runs``. Compare with bench/mailbox.py, where nats-py's own turnaround is part of the figure.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from core_pubsub import Server, free_ports, mq9_argv

ACK_PREFIX = b"MSG _ACK.1 "


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.recv(4096)
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _ACK.* 1\r\nPING\r\n')
    seen = b""
    while b"PONG\r\n" not in seen:
        seen += sock.recv(4096)
    return sock


def _create(sock: socket.socket) -> bytes:
    sock.sendall(b"PUB $mq9.AI.MAILBOX.CREATE _ACK.0 2\r\n{}\r\n")
    data = b""
    while data.count(b"\r\n") < 2:
        data += sock.recv(4096)
    return json.loads(data.split(b"\r\n")[1])["mail_address"].encode()


def measure(port: int, messages: int, in_flight: int, size: int) -> float:
    """Acked durable sends per second over ``messages`` sends."""
    sock = _connect(port)
    frame = b"PUB $mq9.AI.MAILBOX." + _create(sock) + b" _ACK.1 %d\r\n" % size + b"x" * size + b"\r\n"
    start = time.perf_counter()
    sock.sendall(frame * in_flight)
    sent, acked, tail = in_flight, 0, b""
    while acked < messages:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data = tail + chunk  # the tail is too short to hold a whole prefix: nothing counted twice
        acks = data.count(ACK_PREFIX)
        if b'"error"' in data:
            raise RuntimeError(f"error reply: {data[:200]!r}")
        tail = data[-(len(ACK_PREFIX) - 1):]
        acked += acks
        more = min(acks, messages - sent)
        if more > 0:
            sock.sendall(frame * more)
            sent += more
    elapsed = time.perf_counter() - start
    sock.close()
    return messages / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mq9-raw-send-") as tmp:
        (port,) = free_ports(1)
        server = Server("mq9cluster", mq9_argv(port, Path(tmp) / "data"), port, Path(tmp) / "mq9.log")
        server.start()
        try:
            time.sleep(1.0)  # the one-node Raft group elects itself
            rates = []
            for run in range(1, args.runs + 1):
                rates.append(measure(port, args.messages, args.in_flight, args.size))
                print(f"run {run}/{args.runs}: {rates[-1]:,.0f} acked durable sends/s "
                      f"({args.messages:,} x {args.size} B, {args.in_flight} in flight)", flush=True)
        finally:
            server.stop()
    print(f"median: {statistics.median(rates):,.0f} acked durable sends/s (raw-socket client)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
