"""Fixtures shared by every test package: real mq9cluster processes with chosen options."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.cluster import Cluster


@pytest.fixture
def mq9(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Start mq9cluster processes with extra CLI arguments; all are stopped at teardown."""
    started: list[Broker] = []

    def start(*args: str) -> Broker:
        broker = Broker("mq9cluster", tmp_path, list(args)).start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Start real N-node mq9cluster clusters (default 3) with extra CLI arguments; stopped at teardown."""
    started: list[Cluster] = []

    def start(size: int = 3, *args: str) -> Cluster:
        group = Cluster(tmp_path, size, list(args))
        started.append(group)
        return group.start()

    yield start
    for group in started:
        group.stop()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory) -> Iterator[Cluster]:
    """One 3-node cluster for a whole test module, for tests that only read and write (no kills)."""
    group = Cluster(tmp_path_factory.mktemp("shared-cluster"), 3).start()
    yield group
    group.stop()
