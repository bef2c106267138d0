"""nats.js (npm `nats`) runs every scenario of node/scenarios.mjs against each broker."""

import pytest

pytestmark = pytest.mark.interop


def test_nats_js(server, scenario, nats_js):
    nats_js.run(scenario, server)


def test_nats_js_across_a_cluster(mesh, nats_js):
    nats_js.run("cluster", mesh[0], url=",".join(node.url for node in mesh))
