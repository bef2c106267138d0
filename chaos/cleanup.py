"""Remove what killed chaos runs left behind: ``python -m chaos.cleanup`` (also ``python -m chaos cleanup``).

- network namespaces named ``mq9c*`` (the processes still inside them are killed by pid first);
- powerfs FUSE mounts and shared bind mounts under a ``.chaos-runs`` directory (lazily unmounted;
  their daemons then exit by themselves).

Only this suite's names and paths are touched. Do not run it while a chaos run is going on.
"""

from __future__ import annotations

import subprocess
import sys

from chaos import net

RUNS_DIR_NAME = ".chaos-runs"


def leftover_mounts(mountinfo: str, marker: str = f"/{RUNS_DIR_NAME}/") -> list[str]:
    """Mount points below a runs directory, deepest first (from /proc/self/mountinfo's text)."""
    points = [line.split()[4] for line in mountinfo.splitlines() if len(line.split()) > 4]
    return sorted({p for p in points if marker in p + "/"}, key=lambda p: -p.count("/"))


def unmount_leftovers() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = leftover_mounts(f.read())
    for point in points:
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    return points


def main() -> int:
    namespaces = net.cleanup()
    mounts = unmount_leftovers()
    print("namespaces deleted:", " ".join(namespaces) or "none")
    print("mounts removed:", " ".join(mounts) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
