"""Where a store's RocksDB files are: generation directories and the pointer naming the current one.

A store at PATH keeps its RocksDB files in one *generation* directory: PATH itself (where every
store starts, and every store made before snapshot installs existed) or ``PATH.N`` (N = 1, 2,
...). The small file ``PATH.CURRENT`` names the current generation; without it PATH is current.

Replacing the whole state (a snapshot install, a restore) fills the next generation, fsyncs every
file and the directory, then moves the pointer with one atomic replace (write ``PATH.CURRENT.tmp``,
fsync, rename, fsync the parent directory). A crash at any point leaves either the old generation
or the new one current, each complete: never a mix. Whatever is not current (a generation whose
install did not finish, an old generation not deleted yet, a snapshot checkpoint that was being
packed) is garbage, removed by ``collect_garbage`` once the store is open.

Only directories and files named after PATH are touched. No RocksDB here: plain files.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from mq9cluster.errors import StoreError

POINTER_SUFFIX = ".CURRENT"
CHECKPOINT_INFIX = ".checkpoint-"
_COPY_CHUNK = 1 << 20


def pointer_path(path: Path) -> Path:
    """The pointer file of the store at ``path``."""
    return path.with_name(path.name + POINTER_SUFFIX)


def _number(path: Path, name: str) -> int:
    """0 for ``path`` itself, N for ``path.N`` (given by name); StoreError for anything else."""
    if name == path.name:
        return 0
    match = re.fullmatch(re.escape(path.name) + r"\.([1-9][0-9]*)", name)
    if match is None:
        raise StoreError(f"{pointer_path(path)} names {name!r}, not a generation of {path}")
    return int(match.group(1))


def current(path: Path) -> Path:
    """The current generation directory of the store at ``path``."""
    try:
        name = pointer_path(path).read_text().strip()
    except FileNotFoundError:
        return path
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read {pointer_path(path)}: {exc}") from exc
    _number(path, name)
    return path.with_name(name)


def next_generation(path: Path) -> Path:
    """An empty directory for the generation after the current one (a leftover is removed)."""
    generation = path.with_name(f"{path.name}.{_number(path, current(path).name) + 1}")
    shutil.rmtree(generation, ignore_errors=True)
    generation.mkdir()
    return generation


def switch(path: Path, generation: Path) -> None:
    """Make ``generation`` (complete and fsynced) current: the commit point of a replacement."""
    _number(path, generation.name)
    pointer = pointer_path(path)
    tmp = pointer.with_name(pointer.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(generation.name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, pointer)
    fsync_dir(path.parent)


def checkpoint_dir(path: Path) -> Path:
    """A fresh, not yet existing directory name for a checkpoint of the store at ``path``."""
    holder = Path(tempfile.mkdtemp(prefix=path.name + CHECKPOINT_INFIX, dir=path.parent))
    return holder / "checkpoint"


def garbage(path: Path) -> list[Path]:
    """Everything named after ``path`` that is not its current generation or its pointer."""
    keep = current(path)
    found = []
    for entry in path.parent.iterdir():
        name = entry.name
        if name == pointer_path(path).name + ".tmp" or name.startswith(path.name + CHECKPOINT_INFIX):
            found.append(entry)
        elif entry != keep and (name == path.name or re.fullmatch(re.escape(path.name) + r"\.[0-9]+", name)):
            found.append(entry)
    return found


def collect_garbage(path: Path) -> None:
    """Remove what ``garbage`` finds (call with the current generation open, so it is locked)."""
    for entry in garbage(path):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def remove(generation: Path) -> None:
    """Delete a generation that is no longer current."""
    shutil.rmtree(generation, ignore_errors=True)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_file(source: BinaryIO, dest: Path) -> None:
    """Write ``source`` to the new file ``dest`` and fsync it."""
    with open(dest, "xb") as out:
        while chunk := source.read(_COPY_CHUNK):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())


def fill(generation: Path, files: Iterable[tuple[str, BinaryIO]]) -> None:
    """Write each (name, content) into ``generation`` as a plain file, fsync each and the directory."""
    for name, content in files:
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise StoreError(f"refusing to write a checkpoint file named {name!r}")
        copy_file(content, generation / name)
    fsync_dir(generation)
