"""Fixtures for the store tests: a real RocksDB store in a temporary directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mq9cluster.store import Mailbox, Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store, closed at teardown."""
    opened = Store.open(tmp_path / "db")
    yield opened
    opened.close()


@pytest.fixture
def mailbox() -> Callable[..., Mailbox]:
    """Build a Mailbox record: ``mailbox("a", public=True, expires_at=5)``."""

    def build(address: str, **fields: object) -> Mailbox:
        values: dict[str, object] = {"created_at": 1_000, "ttl": 0, "expires_at": 0,
                                     "public": False, "desc": ""}
        values.update(fields)
        return Mailbox(address, **values)  # type: ignore[arg-type]

    return build
