"""The history of a chaos run: every client operation and every fault, in the order they happened.

An entry is a plain dict (one JSON line in ``history.jsonl``)::

    {"index": 17, "time": 3.204, "process": "p2.5", "type": "invoke", "f": "send",
     "node": "n3", "value": {"mailbox": "...", "priority": "urgent", "uid": "p2.5-41"}}

``type`` is ``invoke`` when an operation starts and ``ok``, ``fail`` or ``info`` when it ends:
``ok`` it happened (the broker acknowledged it), ``fail`` it definitely did not happen (the
broker refused it for a reason that rules out a commit), ``info`` unknown (time-out, lost
connection, "not committed ... retry": the operation may still have committed). A process runs
one operation at a time, so a completion belongs to the last invoke of the same process.
Processes named ``nemesis`` record faults (``type`` ``info``), ``final`` the post-heal reads.
``time`` is seconds since the run began, on one monotonic clock for clients and faults alike.

Functions here are pure: they build and read histories, they never touch the network.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Entry = dict[str, Any]
COMPLETIONS = ("ok", "fail", "info")


class Recorder:
    """Appends entries with the run's clock; what the workload and the nemesis write into."""

    def __init__(self, clock=time.monotonic, path: Path | None = None) -> None:
        self._clock = clock
        self._start = clock()
        self.entries: list[Entry] = []
        self._out = path.open("w") if path is not None else None  # written as it happens

    def now(self) -> float:
        return round(self._clock() - self._start, 4)

    def add(self, type_: str, process: str, f: str, node: str | None = None, value: Any = None) -> Entry:
        entry = {"index": len(self.entries), "time": self.now(), "process": process, "type": type_, "f": f,
                 "node": node, "value": value}
        self.entries.append(entry)
        if self._out is not None:
            self._out.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._out.flush()
        return entry

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def invoke(self, process: str, f: str, node: str | None, value: Any = None) -> Entry:
        return self.add("invoke", process, f, node, value)

    def complete(self, invoked: Entry, type_: str, value: Any = None) -> Entry:
        """The completion of ``invoked``; ``value`` is merged over the invoke's value."""
        assert type_ in COMPLETIONS
        merged = {**(invoked["value"] or {}), **(value or {})}
        return self.add(type_, invoked["process"], invoked["f"], invoked["node"], merged)

    def fault(self, f: str, value: Any = None, node: str | None = None) -> Entry:
        return self.add("info", "nemesis", f, node, value)


@dataclass(frozen=True)
class Operation:
    """An invoke and its completion (``completion`` is None if the run ended first)."""

    invoke: Entry
    completion: Entry | None

    @property
    def f(self) -> str:
        return self.invoke["f"]

    @property
    def type(self) -> str:
        """``ok``, ``fail`` or ``info``; an operation that never completed counts as ``info``."""
        return "info" if self.completion is None else self.completion["type"]

    @property
    def value(self) -> dict[str, Any]:
        return (self.completion or self.invoke)["value"] or {}

    @property
    def start(self) -> float:
        return self.invoke["time"]

    @property
    def end(self) -> float:
        """Completion time; infinity if it never completed (it may take effect at any time)."""
        return float("inf") if self.completion is None else self.completion["time"]

    @property
    def node(self) -> str | None:
        return self.invoke["node"]

    @property
    def process(self) -> str:
        return self.invoke["process"]


def operations(history: Iterable[Entry]) -> list[Operation]:
    """Pair every invoke with its process's next completion, in invoke order."""
    open_: dict[str, Entry] = {}
    pairs: dict[int, Operation] = {}
    for entry in history:
        process = entry["process"]
        if entry["type"] == "invoke":
            if process in open_:
                raise ValueError(f"process {process} invoked twice without a completion (entry {entry['index']})")
            open_[process] = entry
        elif process in open_:
            invoked = open_.pop(process)
            pairs[invoked["index"]] = Operation(invoked, entry)
    for invoked in open_.values():
        pairs[invoked["index"]] = Operation(invoked, None)
    return [pairs[i] for i in sorted(pairs)]


def faults(history: Iterable[Entry]) -> list[Entry]:
    """The nemesis entries, in order."""
    return [entry for entry in history if entry["process"] == "nemesis"]


def write(history: Iterable[Entry], path: Path) -> None:
    with path.open("w") as out:
        for entry in history:
            out.write(json.dumps(entry, separators=(",", ":")) + "\n")


def read(path: Path) -> list[Entry]:
    return list(_lines(path))


def _lines(path: Path) -> Iterator[Entry]:
    with path.open() as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)
