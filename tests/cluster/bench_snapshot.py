"""Cost of a Raft snapshot of the store, step by step: ``python -m tests.cluster.bench_snapshot [N]``.

Fills a store with N messages (default 100,000) of 128 random bytes, in batches of 500, the
last 20,000 still in the memtable; then times each step of writing a snapshot (capture on the
snapshot thread, the container written and fsynced, the rename into place on the tick thread)
and of installing one (checksum pass, unpack into a new generation, swap). Writes into a
temporary directory under the current one (the disk the data dir would be on). Not collected
by pytest.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from mq9cluster.cluster.journal import _fsync_dir
from mq9cluster.cluster.raft import (
    _snapshot_meta,
    read_snapshot_meta,
    verified_snapshot_state,
    write_snapshot_file,
)
from mq9cluster.store import Mailbox, Store

BATCH = 500
IN_MEMTABLE = 20_000


def _fill(store: Store, count: int) -> None:
    index = store.last_applied() + 1
    for first in range(0, count, BATCH):
        batch = store.batch(index)
        if not batch.has_mailbox("bench.inbox"):
            batch.put_mailbox(Mailbox("bench.inbox", 0, 0, 0, False, ""))
        for n in range(first, min(first + BATCH, count)):
            batch.append_message("bench.inbox", n & 3, n, os.urandom(128))
        batch.commit()
        index += 1


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:8.1f} ms"


def main(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-snapshot-", dir=".") as tmp:
        root = Path(tmp)
        leader = Store.open(root / "leader" / "store")
        _fill(leader, count - IN_MEMTABLE)
        leader.persist()
        leader.checkpoint(root / "flush")  # flushes the memtable; the rest stays in it
        _fill(leader, IN_MEMTABLE)
        print(f"{count:,} messages of 128 B, {IN_MEMTABLE:,} of them in the memtable")

        started = time.perf_counter()
        state = leader.snapshot()
        print(f"snapshot thread: capture (WAL fsync + checkpoint)     {_ms(started)}")
        partial = root / "snapshot.writing"
        started = time.perf_counter()
        size = write_snapshot_file(str(partial), _snapshot_meta((b"", 2, 1), (b"", 1, 1), [], state.index),
                                   state.write_to)
        print(f"snapshot thread: container written + fsync (tar)     {_ms(started)}  {size / 1e6:.1f} MB")
        state.discard()
        started = time.perf_counter()
        os.replace(partial, root / "snapshot")
        _fsync_dir(str(root))
        print(f"raft tick thread: rename into place + directory fsync {_ms(started)}")

        follower = Store.open(root / "follower" / "store")
        _fill(follower, 1000)
        with open(root / "snapshot", "rb") as f:
            read_snapshot_meta(f)
            started = time.perf_counter()
            stream = verified_snapshot_state(f)
            print(f"raft tick thread: install, checksum pass              {_ms(started)}")
            started = time.perf_counter()
            follower.install(stream)  # type: ignore[arg-type]
            print(f"raft tick thread: install, unpack + fsync + swap      {_ms(started)}")
        assert follower.last_applied() == leader.last_applied()
        follower.close()
        leader.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
