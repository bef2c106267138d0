"""Delivery: what a replay holds back while it waits for its read barrier, on a real store.

Found by the chaos suite (pause-leader, seed 2): a node catching up after a pause applied a
message and then its delete while a new subscription waited for its barrier; the view no longer
had the message, but the held copy was delivered after the replay, out of priority order and
after its delete.
"""

from __future__ import annotations

import asyncio

from mq9cluster.mailbox import ops
from mq9cluster.mailbox.delivery import Delivery
from mq9cluster.mailbox.machine import MailboxMachine
from mq9cluster.mailbox.subjects import Receive
from mq9cluster.store import Store

T0 = 1_700_000_000_000


class Sub:
    subject = b"$mq9.AI.MAILBOX.inbox.*"
    queue = None
    closed = False

    def __init__(self) -> None:
        self.got: list[tuple[bytes, bytes]] = []

    def send(self, subject: bytes, payload: bytes, headers: bytes | None) -> None:
        self.got.append((subject, payload))

    def pending(self) -> int:
        return 0


def test_a_message_applied_and_deleted_during_the_barrier_is_not_delivered(tmp_path) -> None:
    async def scenario() -> list[bytes]:
        store = Store.open(tmp_path / "store")
        gate = asyncio.Event()

        async def barrier() -> None:
            await gate.wait()

        async def claim(*args):
            return []

        delivery = Delivery(store, barrier, claim, replay_window=1 << 20)
        machine = MailboxMachine(store, delivery.apply_changes)
        machine.apply_batch(2, [ops.encode(ops.CreateOp("inbox", T0, 0, False, ""))])
        machine.apply_batch(3, [ops.encode(ops.AppendOp("inbox", 1, T0, b"before", None))])
        sub = Sub()
        delivery.add_receiver(sub, Receive("inbox", frozenset({0, 1, 2, 3}), False))
        await asyncio.sleep(0)  # the replay now waits for its barrier
        machine.apply_batch(4, [ops.encode(ops.AppendOp("inbox", 3, T0, b"deleted", None))])
        machine.apply_batch(5, [ops.encode(ops.DeleteMessageOp("inbox", 2))])
        machine.apply_batch(6, [ops.encode(ops.AppendOp("inbox", 0, T0, b"after", None))])
        gate.set()  # the barrier passes: the view has "before" and "after", not "deleted"
        for _ in range(10):
            await asyncio.sleep(0)
        store.close()
        return [payload for _, payload in sub.got]

    assert asyncio.run(scenario()) == [b"before", b"after"]
