"""PullService.run_ticks: a due delayed message gets its tick; an idle node does not search the
store for timers on every round, only after something was applied."""

from __future__ import annotations

import asyncio

from mq9cluster.mailbox import ops
from mq9cluster.mailbox.machine import MailboxMachine
from mq9cluster.mailbox.pull_service import PullService, now_ms
from mq9cluster.store import Store

INTERVAL = 0.01


class SearchCountingStore(Store):
    """The real store, counting its searches for the next timer."""

    searches = 0

    def next_message_timer(self) -> int | None:
        self.searches += 1
        return super().next_message_timer()


def test_ticks_search_only_after_an_apply_and_release_a_due_message(tmp_path) -> None:
    store = SearchCountingStore.open(tmp_path / "store")
    machine = MailboxMachine(store, lambda changes: None)
    index = 1
    machine.apply_batch(index, [ops.encode(ops.CreateOp("box", now_ms(), 0, False, ""))])
    ticks: list[dict] = []

    async def submit(op: ops.Op) -> dict:
        """A one-node commit: the op is applied at the next index."""
        nonlocal index
        index += 1
        (result,) = machine.apply_batch(index, [ops.encode(op)])
        if isinstance(op, ops.TickOp):
            ticks.append(result)
        return result

    service = PullService(store, submit, None, None, None, None, None)

    async def scenario() -> None:
        task = asyncio.get_running_loop().create_task(service.run_ticks(lambda: True, INTERVAL))
        await asyncio.sleep(30 * INTERVAL)
        assert store.searches == 1  # idle: one search, then none until an apply
        await submit(ops.SendOp("box", 1, now_ms(), b"later", None, "", [], 0, 100))
        await asyncio.sleep(30 * INTERVAL)
        task.cancel()

    try:
        asyncio.run(scenario())
        assert [tick["released"] for tick in ticks] == [1]
        assert [msg.payload for msg in store.iter_messages("box")] == [b"later"]
        assert store.searches <= 4  # after the send, after the tick (nothing due), not per round
    finally:
        store.close()
