"""One chaos run from start to verdict: network, nodes, workload, faults, heal, final reads, check.

The run directory keeps ``history.jsonl``, ``verdict.json`` and each node's log; the nodes'
data directories are deleted when the run passes and kept (archived) when it fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import signal
import sys
import time
from pathlib import Path

from chaos.checker import check
from chaos.cluster import ChaosCluster
from chaos.history import Recorder
from chaos.net import Network
from chaos.report import RunResult
from chaos.scenarios import Context, Scenario
from chaos.workload import Workload

log = logging.getLogger("chaos.runner")

SETTLE = 3.0  # seconds of workload after the heal, before it stops


def dump_tasks() -> None:
    """SIGUSR1: where every task of the run is waiting (for a run that seems stuck)."""
    for task in asyncio.all_tasks():
        task.print_stack(limit=6, file=sys.stderr)
    sys.stderr.flush()


async def drive(scenario: Scenario, seed: int, cluster: ChaosCluster, recorder: Recorder) -> None:
    """Start the nodes, run workload and nemesis, heal, stop the workload, read every node."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    await cluster.start_all()
    workload = Workload(recorder, cluster.urls(), random.Random(f"{seed}-workload"), scenario.workload)
    await workload.setup()
    workload.start()
    ctx = Context(cluster, random.Random(f"{seed}-nemesis"), time.monotonic() + scenario.duration)
    try:
        await asyncio.wait_for(scenario.nemesis(ctx), scenario.duration + 60)
    finally:
        await cluster.heal_everything()
        await asyncio.sleep(SETTLE)
        await workload.stop()
    await cluster.heal_everything()
    for name in cluster.up():
        await workload.final_read(name)


def run(scenario: Scenario, seed: int, base: Path) -> RunResult:
    """Run ``scenario`` with ``seed``; the result, with its run directory under ``base``."""
    run_dir = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{scenario.name}-{seed}"
    run_dir.mkdir(parents=True)
    recorder = Recorder(path=run_dir / "history.jsonl")
    began = time.monotonic()
    names = [f"n{i + 1}" for i in range(scenario.nodes)]
    error = None
    with Network(names) as net:
        cluster = ChaosCluster(net, run_dir, recorder, list(scenario.extra_args), power=scenario.power,
                               clock=scenario.clock)
        net.enter_client_ns()
        try:
            asyncio.run(drive(scenario, seed, cluster, recorder))
        except Exception as exc:  # noqa: BLE001 - the run is judged on what it recorded, and fails
            log.exception("%s seed %d: the run broke off", scenario.name, seed)
            error = f"{type(exc).__name__}: {exc}"
            recorder.add("info", "runner", "error", value={"error": error})
        finally:
            cluster.stop_all()
            net.leave_client_ns()
    recorder.close()
    entries = recorder.entries
    verdict = check(entries)
    if error is not None:
        verdict.counts["run_error"] = 1
        verdict.note("run_error", error)
    verdict.counts["nodes_exited"] = len(cluster.exits)
    for name, why in cluster.exits.items():
        verdict.note("nodes_exited", f"{name}: {why}")
    result = RunResult(scenario.name, seed, verdict, round(time.monotonic() - began, 1), str(run_dir))
    (run_dir / "verdict.json").write_text(json.dumps(
        {"scenario": scenario.name, "seed": seed, "valid": verdict.valid,
         "counts": verdict.counts, "examples": verdict.examples}, indent=1, default=str))
    if verdict.valid:
        for node in cluster.nodes.values():
            shutil.rmtree(node.data_dir, ignore_errors=True)
            shutil.rmtree(node.backing_dir, ignore_errors=True)
    return result
