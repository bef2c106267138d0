"""nats.js (npm `nats`) runs every scenario of node/scenarios.mjs against each broker."""

import pytest

pytestmark = pytest.mark.interop


def test_nats_js(server, scenario, nats_js):
    nats_js.run(scenario, server)
