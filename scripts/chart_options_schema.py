"""Writes (or with --check, verifies) config.options in helm/mq9cluster/values.schema.json.

The chart's `config.options` are the broker's own options, so their schema comes from the Settings
model (as docs/configuration.md does): name, type and bounds, minus the options the chart sets
for every pod itself. A chart install with an unknown or out-of-range option then fails at
`helm install` time, not in a crash-looping pod.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mq9cluster.config import Settings

SCHEMA = Path(__file__).resolve().parent.parent / "helm" / "mq9cluster" / "values.schema.json"
# Set per pod or from config.nats/raft/monitor by the chart (templates/_helpers.tpl, statefulset.yaml).
CHART_OWNED = {"host", "port", "http_port", "data_dir", "raft_addr", "peers", "node_id", "server_name",
               "cluster_addr", "routes", "client_advertise"}
KEPT = ("type", "anyOf", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "items", "description")


def options_schema() -> dict:
    """The JSON schema of every broker option a chart user may set, from the Settings model."""
    properties = Settings.model_json_schema()["properties"]
    return {name: {key: spec[key] for key in KEPT if key in spec}
            for name, spec in properties.items() if name not in CHART_OWNED}


def main() -> int:
    schema = json.loads(SCHEMA.read_text())
    options = schema["properties"]["config"]["properties"]["options"]
    wanted = options_schema()
    if "--check" in sys.argv[1:]:
        if options["properties"] != wanted:
            print(f"{SCHEMA}: config.options is stale; run: python scripts/chart_options_schema.py", file=sys.stderr)
            return 1
        return 0
    options["properties"] = wanted
    SCHEMA.write_text(json.dumps(schema, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
