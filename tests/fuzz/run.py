"""The long fuzz run: ``python -m tests.fuzz.run TARGET --runs N`` (``make fuzz`` runs every target
for 1,000,000 inputs).

With atheris installed (``pip install '.[fuzz]'``) the inputs are coverage-guided; without it, a
seeded mutation loop over the seed corpus stands in. Either way the run fails on the first input
that raises and prints progress with inputs/s. Unbounded memory growth fails it too: under
atheris, libFuzzer's ``-rss_limit_mb`` (``--max-rss-mb``); in the loop, growth of more than
``--max-growth-mb`` between the first 10% of the run and its end.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time


def rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Progress:
    """Counts inputs, prints a line every few seconds, watches memory after a warm-up."""

    def __init__(self, name: str, runs: int, max_growth_mb: float) -> None:
        self.name, self.runs, self.max_growth_mb = name, runs, max_growth_mb
        self.done = 0
        self.started = self.last_print = time.monotonic()
        self.warm_rss: float | None = None

    def tick(self) -> None:
        self.done += 1
        if self.warm_rss is None and self.done >= self.runs // 10:
            self.warm_rss = rss_mb()
        now = time.monotonic()
        if now - self.last_print >= 5 or self.done == self.runs:
            self.last_print = now
            rate = self.done / max(now - self.started, 1e-9)
            print(f"fuzz {self.name}: {self.done:,}/{self.runs:,} inputs, {rate:,.0f}/s, rss {rss_mb():.0f} MB",
                  flush=True)

    def finish(self) -> None:
        growth = rss_mb() - (self.warm_rss or rss_mb())
        elapsed = time.monotonic() - self.started
        print(f"fuzz {self.name}: done, {self.done:,} inputs in {elapsed:.0f} s "
              f"({self.done / max(elapsed, 1e-9):,.0f}/s), memory growth after warm-up {growth:.1f} MB", flush=True)
        if growth > self.max_growth_mb:
            sys.exit(f"fuzz {self.name}: memory grew {growth:.1f} MB (limit {self.max_growth_mb})")


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One random edit: flip, insert, delete, duplicate, or splice with another input."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        pos = rng.randint(0, len(buf))
        if choice == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif choice == 1:
            buf[pos:pos] = bytes(rng.choice(b"\r\n \t0123456789{}|.*>\"") for _ in range(rng.randint(1, 3)))
        elif choice == 2 and buf:
            del buf[pos:pos + rng.randint(1, 8)]
        elif choice == 3 and buf:
            end = min(len(buf), pos + rng.randint(1, 32))
            buf[pos:pos] = buf[pos:end] * rng.randint(1, 4)
        else:
            other = rng.choice(pool)
            cut = rng.randint(0, len(other))
            buf[pos:] = other[cut:]
    return bytes(buf[:8192])


def run_plain(name: str, runs: int, progress: Progress, seed: int) -> None:
    """The fallback: mutate seeds and earlier inputs, seeded and repeatable."""
    from tests.fuzz.targets import SEEDS, TARGETS

    rng = random.Random(seed)
    target, pool = TARGETS[name], list(SEEDS[name])
    for _ in range(runs):
        data = mutate(rng, rng.choice(pool), pool)
        target(data)
        if len(pool) < 4096 and rng.random() < 0.01:
            pool.append(data)
        progress.tick()


def run_atheris(name: str, runs: int, progress: Progress, corpus_dir: str, max_rss_mb: int) -> None:
    import atheris

    with atheris.instrument_imports(include=["mq9cluster", "tests.fuzz"]):  # coverage of our code only
        from tests.fuzz.targets import TARGETS
    target = TARGETS[name]

    def one(data: bytes) -> None:
        target(data)
        progress.tick()

    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=8192", f"-rss_limit_mb={max_rss_mb}",
                   "-print_final_stats=1", corpus_dir], one)
    atheris.Fuzz()  # libFuzzer ends the process itself, with its own final statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=["mq9", "parser"])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-growth-mb", type=float, default=64.0)
    parser.add_argument("--max-rss-mb", type=int, default=1024)
    parser.add_argument("--plain", action="store_true", help="Use the mutation loop even if atheris is installed.")
    parser.add_argument("--corpus", default="", help="Directory atheris keeps its corpus in (default: a temporary one).")
    args = parser.parse_args()
    progress = Progress(args.target, args.runs, args.max_growth_mb)
    try:
        import atheris  # noqa: F401
        have_atheris = not args.plain
    except ImportError:
        have_atheris = False
    if have_atheris:
        import os
        import tempfile

        corpus = args.corpus or tempfile.mkdtemp(prefix=f"mq9-fuzz-{args.target}-")
        from tests.fuzz.seeds import SEEDS

        for index, seed in enumerate(SEEDS[args.target]):
            with open(os.path.join(corpus, f"seed-{index}"), "wb") as f:
                f.write(seed)
        print(f"fuzz {args.target}: atheris, corpus {corpus}", flush=True)
        run_atheris(args.target, args.runs, progress, corpus, args.max_rss_mb)
    else:
        print(f"fuzz {args.target}: mutation loop (atheris not installed)", flush=True)
        run_plain(args.target, args.runs, progress, args.seed)
        progress.finish()


if __name__ == "__main__":
    main()
