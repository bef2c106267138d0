"""Registers the ``wire`` marker for the optional checks against a real nats-server."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "wire: compares with a real nats-server on loopback (skipped if not installed)")
