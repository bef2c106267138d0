"""Report tables of chaos runs (Markdown, so they go into docs/reliability.md as printed)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chaos.checker import Verdict
from chaos.history import Entry, faults


@dataclass(frozen=True)
class RunResult:
    scenario: str
    seed: int
    verdict: Verdict
    seconds: float
    run_dir: str


def _max(values: Iterable[Any]) -> str:
    known = [v for v in values if v is not None]
    missing = sum(1 for v in values if v is None)
    text = f"{max(known):.2f}" if known else "-"
    return text + (f" (+{missing} never)" if missing else "")


def _by(counts: dict[str, int]) -> str:
    shown = {k: v for k, v in counts.items() if v}
    return " ".join(f"{k}:{v}" for k, v in shown.items()) or "0"


COLUMNS = ["scenario", "seed", "attempted", "acked", "refused", "unknown", "recovered", "lost", "lost by kind", "lost by node",
           "phantom", "returned deletes", "duplicates", "inversions", "stale replays", "minority acks",
           "divergence", "queue dups", "unavail. total s", "longest s", "failover max s", "recovery max s",
           "verdict"]


def row(result: RunResult) -> list[str]:
    c = result.verdict.counts
    lost = c.get("lost", 0)
    return [
        result.scenario, str(result.seed), str(c.get("attempted", 0)), str(c.get("acknowledged", 0)),
        str(c.get("failed", 0)), str(c.get("unknown", 0)), str(c.get("recovered", 0)), str(lost),
        _by(c.get("lost_by_kind", {})) if lost else "-", _by(c.get("lost_by_node", {})) if lost else "-",
        str(c.get("phantom", 0)), str(c.get("returned_deletes", 0)), str(c.get("duplicates", 0)),
        str(c.get("inversions", 0)), str(c.get("stale_replays", 0)), str(c.get("minority_acks", 0)),
        str(c.get("divergence", 0)), str(c.get("queue_duplicates", 0)), str(c.get("unavailable_total", 0)),
        str(c.get("unavailable_longest", 0)), _max(c.get("failovers", [])), _max(c.get("recoveries", [])),
        "pass" if result.verdict.valid else "FAIL: " + ", ".join(result.verdict.failed_gates()),
    ]


def table(results: Iterable[RunResult]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(result)) + " |" for result in results]
    return "\n".join(lines)


def details(result: RunResult) -> str:
    """Examples of each failed gate, for the log of a failing run."""
    out = [f"{result.scenario} seed {result.seed}: {result.run_dir}"]
    for kind, examples in result.verdict.examples.items():
        out.append(f"  {kind}:")
        out += [f"    {example}" for example in examples]
    return "\n".join(out)


def corruption_outcomes(history: Iterable[Entry]) -> list[tuple[str, str, str]]:
    """(kind, mode, outcome) per corruption of a history: ``refused`` if the node then refused its
    data (detected), ``rebuilt`` if it also rebuilt itself from its peers, ``started`` if it went
    on serving (its final state is then judged with the others'), ``nothing`` if there was no
    such file to damage."""
    out: list[tuple[str, str, str]] = []
    pending: dict[str, int] = {}
    for entry in faults(history):
        value = entry["value"] or {}
        node = (value.get("nodes") or [None])[0]
        if entry["f"] == "corrupt":
            outcome = "started" if value.get("done") else "nothing"
            pending[node] = len(out)
            out.append((value["kind"], value["mode"], outcome))
        elif entry["f"] in ("refused", "rebuilt") and node in pending:
            i = pending[node]
            out[i] = (out[i][0], out[i][1], entry["f"])
            if entry["f"] == "rebuilt":
                del pending[node]
    return out


def corruption_table(outcomes: Iterable[tuple[str, str, str]]) -> str:
    """Counts of each outcome per damaged kind of file and mode."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for kind, mode, outcome in outcomes:
        counts.setdefault((kind, mode), {}).setdefault(outcome, 0)
        counts[(kind, mode)][outcome] += 1
    lines = ["| file | damage | refused (detected) | of which rebuilt itself | started (judged by the gates) "
             "| no such file yet |", "|---|---|---|---|---|---|"]
    for (kind, mode), c in sorted(counts.items()):
        detected = c.get("refused", 0) + c.get("rebuilt", 0)
        lines.append(f"| {kind} | {mode} | {detected} | {c.get('rebuilt', 0)} | {c.get('started', 0)} "
                     f"| {c.get('nothing', 0)} |")
    return "\n".join(lines)
