"""``python -m chaos``: run scenarios, the CI subset, a soak, re-check a history, clean up.

    python -m chaos list
    python -m chaos run kill-leader --seed 1 [--duration 30]
    python -m chaos ci                       # the gating subset (make chaos)
    python -m chaos all --seed 1 --duration 25   # every scenario once
    python -m chaos soak --minutes 30        # random scenarios and seeds (make soak)
    python -m chaos check RUN_DIR/history.jsonl
    python -m chaos table RUN_DIR...         # judge runs again (after a checker change), one table
    python -m chaos corruption .chaos-runs/*corrupt*/history.jsonl
    python -m chaos cleanup                  # namespaces left by killed runs

Exit status 0 only if every run passed every gate.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

from chaos import cleanup, history
from chaos.checker import check
from chaos.report import RunResult, corruption_outcomes, corruption_table, details, table
from chaos.runner import run
from chaos.scenarios import CI, SCENARIOS

DEFAULT_BASE = Path(".chaos-runs")


def _report(results: list[RunResult], out: Path | None) -> int:
    text = table(results)
    print(text)
    for result in results:
        if not result.verdict.valid:
            print(details(result))
    if out is not None:
        out.write_text(text + "\n")
    failed = [r for r in results if not r.verdict.valid]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _run_one(name: str, seed: int, base: Path, duration: float | None) -> RunResult:
    scenario = SCENARIOS[name]
    if duration is not None:
        scenario = dataclasses.replace(scenario, duration=duration)
    print(f"== {name} seed {seed} ({scenario.nodes} nodes, {scenario.duration:.0f} s of faults)", flush=True)
    result = run(scenario, seed, base)
    print(f"   {'pass' if result.verdict.valid else 'FAIL'} in {result.seconds} s: {result.run_dir}", flush=True)
    return result


def rejudge(run_dir: Path) -> RunResult:
    """A run judged again from its history, with what only the runner knew (nodes that exited,
    a run that broke off) taken from its verdict.json."""
    saved = json.loads((run_dir / "verdict.json").read_text())
    verdict = check(history.read(run_dir / "history.jsonl"))
    for key in ("nodes_exited", "run_error"):
        if saved["counts"].get(key):
            verdict.counts[key] = saved["counts"][key]
            verdict.examples[key] = saved["examples"].get(key, [])
    return RunResult(saved["scenario"], saved["seed"], verdict, 0.0, str(run_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, help="where run directories go")
    parser.add_argument("--table", type=Path, help="also write the report table to this file")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    one = sub.add_parser("run")
    one.add_argument("scenario", choices=sorted(SCENARIOS))
    one.add_argument("--seed", type=int, default=1)
    one.add_argument("--duration", type=float)
    sub.add_parser("ci")
    every = sub.add_parser("all", help="every scenario once")
    every.add_argument("--seed", type=int, default=1)
    every.add_argument("--duration", type=float)
    soak = sub.add_parser("soak")
    soak.add_argument("--minutes", type=float, default=30.0)
    soak.add_argument("--seed", type=int, default=int(time.time()))
    again = sub.add_parser("check")
    again.add_argument("history", type=Path)
    sub.add_parser("cleanup")
    again_all = sub.add_parser("table", help="judge run directories again, one table")
    again_all.add_argument("runs", type=Path, nargs="+")
    damage = sub.add_parser("corruption", help="what corrupted nodes did, over several runs")
    damage.add_argument("histories", type=Path, nargs="+")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if args.command == "list":
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:20} {scenario.nodes} nodes  {scenario.doc}")
        return 0
    if args.command == "cleanup":
        return cleanup.main()
    if args.command == "check":
        entries = history.read(args.history)
        outcomes = corruption_outcomes(entries)
        if outcomes:
            print(corruption_table(outcomes))
        return _report([RunResult("(history)", 0, check(entries), 0.0, str(args.history.parent))], args.table)
    if args.command == "table":
        return _report([rejudge(run_dir) for run_dir in args.runs], args.table)
    if args.command == "corruption":
        print(corruption_table(o for path in args.histories for o in corruption_outcomes(history.read(path))))
        return 0
    if os.geteuid() != 0:
        print("chaos runs need root (network namespaces, iptables, FUSE)", file=sys.stderr)
        return 2
    args.base.mkdir(parents=True, exist_ok=True)
    if args.command == "run":
        return _report([_run_one(args.scenario, args.seed, args.base, args.duration)], args.table)
    if args.command == "ci":
        return _report([_run_one(name, seed, args.base, None) for name, seed in CI], args.table)
    if args.command == "all":
        return _report([_run_one(name, args.seed, args.base, args.duration) for name in SCENARIOS], args.table)
    rng = random.Random(args.seed)
    results = []
    end = time.monotonic() + args.minutes * 60
    while time.monotonic() < end:
        name = rng.choice(sorted(n for n, scenario in SCENARIOS.items() if scenario.soak))
        results.append(_run_one(name, rng.randrange(1 << 30), args.base, None))
    return _report(results, args.table)


if __name__ == "__main__":
    sys.exit(main())
