"""The wall-clock shim of clock-fault runs: spec parsing, and a skewed process beside a true one."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import chaos.nodes
from chaos.clockshim.sitecustomize import parse


def test_specs() -> None:
    assert parse("+0 x1") == (0.0, 1.0)
    assert parse("-10m") == (-600.0, 1.0)
    assert parse("+2h x0,5") == (7200.0, 0.5)
    assert parse("+30 x3") == (30.0, 3.0)
    assert parse("garbage") == (0.0, 1.0)


def test_a_process_with_the_shim_sees_the_skew_and_a_true_monotonic_clock(tmp_path: Path) -> None:
    spec = tmp_path / "clock.spec"
    spec.write_text("+1h\n")
    code = "import time; print(time.time()); print(time.monotonic()); time.sleep(0.01)"
    env = {"PYTHONPATH": str(chaos.nodes.CLOCK_SHIM), "MQ9_CHAOS_CLOCK": str(spec)}
    before_wall, before_mono = time.time(), time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    wall, mono = map(float, out.split())
    assert 3590 < wall - before_wall < 3610
    assert 0 <= mono - before_mono < 10
