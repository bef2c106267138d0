"""Wall-clock faults for a chaos node: loaded at interpreter start through PYTHONPATH.

When ``MQ9_CHAOS_CLOCK`` names a file, ``time.time()`` and ``time.time_ns()`` of this process
follow the spec in it (re-read at most every 0.2 s): an offset in seconds (suffix m or h
allowed) and an optional rate, ``+600``, ``-1h``, ``+0 x3``, ``+30 x0.5``; ``+0 x1`` is the true
clock. A new rate counts from the moment the spec changed. ``time.monotonic()`` and
``time.perf_counter()`` are left alone, so Raft timers and the event loop keep true time.

libfaketime was the first choice, but with FAKETIME_DONT_FAKE_MONOTONIC (monotonic left alone)
Debian's 0.9.10 makes Python's time.sleep() fail with EINVAL and timed waits return at once, and
without it the monotonic clock jumps with every change of offset.
"""

import os
import time

_PATH = os.environ.get("MQ9_CHAOS_CLOCK")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse(text: str) -> tuple[float, float]:
    """(offset seconds, rate) of a spec such as ``-10m x2``; the true clock for anything unreadable."""
    offset, rate = 0.0, 1.0
    for word in text.split():
        try:
            if word[0] in "+-":
                unit = _UNITS.get(word[-1], 1.0)
                offset = float(word[1:].rstrip("smhd") or 0) * unit * (-1 if word[0] == "-" else 1)
            elif word[0] == "x":
                rate = float(word[1:].replace(",", "."))
        except (ValueError, IndexError):
            return 0.0, 1.0
    return offset, rate


if _PATH:
    _real, _mono = time.time, time.monotonic
    _state = {"read": -1e9, "spec": (0.0, 1.0), "since": _real()}

    def _spec() -> tuple[tuple[float, float], float]:
        now = _mono()
        if now - _state["read"] >= 0.2:
            _state["read"] = now
            try:
                with open(_PATH) as f:
                    spec = parse(f.read())
            except OSError:
                spec = (0.0, 1.0)
            if spec != _state["spec"]:
                _state["spec"], _state["since"] = spec, _real()
        return _state["spec"], _state["since"]

    def _fake_time() -> float:
        (offset, rate), since = _spec()
        real = _real()
        return real + offset + (real - since) * (rate - 1.0)

    def _fake_time_ns() -> int:
        return int(_fake_time() * 1e9)

    time.time = _fake_time
    time.time_ns = _fake_time_ns
