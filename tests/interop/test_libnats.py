"""libnats (the NATS C client) runs every scenario of c/scenarios.c against each broker."""

import pytest

pytestmark = pytest.mark.interop


def test_libnats(server, scenario, libnats):
    libnats.run(scenario, server)
