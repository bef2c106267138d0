"""Micro-benchmark of the store's hot paths: ``python -m tests.store.bench_store``.

Appends 100k messages of 128 bytes in batches of 500 (one batch per Raft index), with and
without an fsync per batch, then replays them with one full scan, lists their summaries and
deletes the mailbox. Not collected by pytest.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from mq9cluster.store import Mailbox, Store

MESSAGES = 100_000
BATCH = 500
PAYLOAD = b"x" * 128
ADDRESS = "bench.inbox"


def _report(label: str, started: float, count: int | None = None) -> None:
    elapsed = time.perf_counter() - started
    rate = f"{count / elapsed:>12,.0f} msgs/s" if count else " " * 19
    print(f"{label:<48} {rate}  {elapsed * 1000:>8,.1f} ms")


def _append_all(store: Store, label: str) -> None:
    batch = store.batch(1)
    batch.put_mailbox(Mailbox(ADDRESS, 0, 0, 0, False, ""))
    batch.commit()
    started = time.perf_counter()
    for index, first in enumerate(range(0, MESSAGES, BATCH), start=2):
        batch = store.batch(index)
        for n in range(first, first + BATCH):
            batch.append_message(ADDRESS, n & 3, 1_700_000_000_000 + n, PAYLOAD)
        batch.commit()
    _report(f"append {MESSAGES:,} x 128 B, batches of {BATCH}{label}", started, MESSAGES)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with Store.open(Path(tmp) / "synced", sync=True) as synced:
            _append_all(synced, ", fsync")
        with Store.open(Path(tmp) / "db") as store:
            _append_all(store, "")

            started = time.perf_counter()
            replayed = sum(1 for _ in store.iter_messages(ADDRESS))
            _report(f"full replay scan of {replayed:,}", started, replayed)

            started = time.perf_counter()
            listed = len(store.list_message_summaries(ADDRESS))
            _report(f"list summaries of {listed:,}", started, listed)

            started = time.perf_counter()
            batch = store.batch(store.last_applied() + 1)
            batch.delete_mailbox(ADDRESS)
            batch.commit()
            _report(f"delete_mailbox holding {MESSAGES:,}", started)


if __name__ == "__main__":
    main()
