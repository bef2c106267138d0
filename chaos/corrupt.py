"""File corruption of a stopped node's data directory: bit flips, truncation, rollback of a chunk.

Kinds of file (paths relative to the node's ``--data-dir``):

| kind | files |
|---|---|
| journal | ``raft/journal`` (the Raft log) |
| meta | ``raft/journal.meta`` (term, vote, commit index) |
| snapshot | ``raft/snapshot`` (pysyncobj's full dump with the store's checkpoint) |
| sst | ``store/**/*.sst`` (RocksDB tables) |
| wal | ``store/**/*.log`` (RocksDB write-ahead log) |
| manifest | ``store/**/MANIFEST-*`` |

Modes: ``bitflip`` (1-8 random bits), ``truncate`` (cut at a random offset), ``rollback``
(a chunk of up to 64 KiB put back to what it held in an older copy of the file, taken at an
earlier stop of the node; a shorter older copy rolls the end of the file back). Every function
returns a description of what it did, for the history, or None when there was nothing to damage.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

KINDS: dict[str, tuple[str, ...]] = {
    "journal": ("raft/journal",),
    "meta": ("raft/journal.meta",),
    "snapshot": ("raft/snapshot",),
    "sst": ("store/**/*.sst",),
    "wal": ("store/**/*.log",),
    "manifest": ("store/**/MANIFEST-*",),
}
MODES = ("bitflip", "truncate", "rollback")
CHUNK = 64 * 1024


def files_of(data_dir: Path, kind: str) -> list[Path]:
    """The non-empty files of ``kind`` under ``data_dir``, sorted."""
    found = {p for pattern in KINDS[kind] for p in data_dir.glob(pattern) if p.is_file() and p.stat().st_size}
    return sorted(found)


def bitflip(path: Path, rng: random.Random) -> dict[str, Any]:
    data = bytearray(path.read_bytes())
    flips = []
    for _ in range(rng.randint(1, 8)):
        offset = rng.randrange(len(data))
        bit = rng.randrange(8)
        data[offset] ^= 1 << bit
        flips.append([offset, bit])
    path.write_bytes(bytes(data))
    return {"mode": "bitflip", "flips": flips}


def truncate(path: Path, rng: random.Random) -> dict[str, Any]:
    size = path.stat().st_size
    cut = rng.randrange(size)
    with path.open("r+b") as f:
        f.truncate(cut)
    return {"mode": "truncate", "from": size, "to": cut}


def rollback(path: Path, older: Path, rng: random.Random) -> dict[str, Any] | None:
    """Put a chunk of ``path`` back to what ``older`` held there."""
    if not older.exists():
        return None
    new, old = path.read_bytes(), older.read_bytes()
    if new == old:
        return None
    if len(old) < len(new) and rng.random() < 0.5:
        path.write_bytes(old)  # the file's end rolled back: a lost tail of valid records
        return {"mode": "rollback", "kind_of": "tail", "from": len(new), "to": len(old)}
    start = rng.randrange(0, max(1, min(len(old), len(new)) - 1))
    end = min(start + rng.randint(512, CHUNK), len(old))
    path.write_bytes(new[:start] + old[start:end] + new[end:])
    return {"mode": "rollback", "kind_of": "chunk", "start": start, "end": end}


def damage(data_dir: Path, kind: str, mode: str, rng: random.Random, older_dir: Path | None = None
           ) -> dict[str, Any] | None:
    """Damage one file of ``kind``; what was done, or None if there is no such file (or no older copy)."""
    candidates = files_of(data_dir, kind)
    if not candidates:
        return None
    path = rng.choice(candidates)
    if mode == "bitflip":
        done = bitflip(path, rng)
    elif mode == "truncate":
        done = truncate(path, rng)
    else:
        older = (older_dir / path.relative_to(data_dir)) if older_dir is not None else None
        done = rollback(path, older, rng) if older is not None else None
    if done is None:
        return None
    return {"kind": kind, "file": str(path.relative_to(data_dir)), **done}


def keep_copy(data_dir: Path, into: Path) -> None:
    """Copy a stopped node's data dir, for a later rollback."""
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(data_dir, into, ignore_dangling_symlinks=True)
