"""app.Node wiring that needs no running node."""

from __future__ import annotations

import asyncio

from mq9cluster.app import Node


class Delivery:
    def __init__(self) -> None:
        self.got: list = []

    def apply_changes(self, changes: list) -> None:
        self.got.append(changes)


class Service:
    def __init__(self) -> None:
        self.delivery = Delivery()


def test_changes_applied_before_the_mailbox_service_exists_are_delivered_once_it_does() -> None:
    """Found by the chaos suite (power-loss-one, seed 1): after a power loss the store was behind
    the journal, the Raft thread applied entry 3 while Node.__init__ had not yet built the
    mailbox service, and the change hand-over raised AttributeError: the node stopped."""

    async def run() -> list:
        node = Node.__new__(Node)  # as RaftNode's thread sees it during __init__
        node.loop = asyncio.get_running_loop()
        node._changes_from_raft(["created"])  # must not touch node.mailboxes here
        node.mailboxes = Service()  # the rest of __init__
        await asyncio.sleep(0)
        return node.mailboxes.delivery.got

    assert asyncio.run(run()) == [["created"]]
