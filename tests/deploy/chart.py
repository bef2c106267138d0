"""The Helm chart as the tests see it: the helm binary, rendered manifests, objects by kind."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "mq9cluster"
HELM = ROOT / ".tools" / "helm" / "helm"
INSTALL_HINT = "install it with scripts/install-helm.sh (make test does, through scripts/install-test-deps.sh)"
RELEASE = "mq9"
NAMESPACE = "agents"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the project's helm binary on the chart."""
    if not HELM.exists():
        pytest.fail(f"no helm at {HELM}: {INSTALL_HINT}")
    done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{done.stderr}")
    return done


def template_args(*values: str, values_file: Path | None = None) -> list[str]:
    """`helm template` arguments for this test release with ``--set`` values (and a values file)."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values_file is not None:
        args += ["-f", str(values_file)]
    for value in values:
        args += ["--set", value]
    return args


def render(*values: str, values_file: Path | None = None) -> list[dict[str, Any]]:
    """The manifests the chart renders with these values, as dicts."""
    out = helm(*template_args(*values, values_file=values_file)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single rendered object of ``kind`` (and ``name``)."""
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[d['metadata']['name'] for d in found]}"
    return found[0]
