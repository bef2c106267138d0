"""Self-rebuild of a member whose data is damaged: keep the evidence, leave, so it can join again.

A member that lost its log, term or vote must not come back as the same voting member with an
empty state: it may have been part of the majority that committed an entry, and having forgotten
its vote it could help elect a leader that lacks that entry, or vote twice in one term. So the
damaged node goes the way an operator would, through the log: its files are moved aside (kept,
never deleted silently), its peers commit its removal, then it joins again with an empty data
dir and catches up by snapshot and log (the joining itself is app.py's ``joining``/``_join``).

A marker file in the data dir, written (and fsynced) before anything is moved, makes a rebuild
that a crash interrupted go on at the next start instead of starting a member with no data.
This module knows nothing of NATS or mailboxes; it speaks to peers only through ``admin``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from mq9cluster.cluster import admin
from mq9cluster.cluster.journal import _fsync_dir
from mq9cluster.errors import ClusterAdminError, JournalCorrupt, SnapshotCorrupt, StoreCorrupt

MARKER = "REBUILDING"
"""File in the data dir while a rebuild is under way: JSON ``{"reason", "since"}``."""
DAMAGED_PREFIX = "damaged-"
KEEP_DAMAGED = 3
"""Damaged copies kept in the data dir: the oldest (the first damage found) and the newest others;
those in between are deleted, each with a log line. A rebuild interrupted and resumed moves what
it had fetched aside too, so copies can pile up."""
RETRY_INTERVAL = 1.0

log = logging.getLogger("mq9cluster.rebuild")


def is_damage(error: BaseException) -> bool:
    """Whether ``error`` says this node's own files are damaged (not a setting, a port, a peer)."""
    if isinstance(error, (JournalCorrupt, SnapshotCorrupt, StoreCorrupt)):
        return True
    # RocksDB reports a damaged block read or written later with a status text starting
    # "Corruption:" (rocksdict raises a plain Exception)
    return isinstance(error, Exception) and "Corruption:" in str(error)


def damage_reason(error: BaseException) -> str:
    """The words of a damage error, with its tracebacks (and those it was raised from) cleared.

    The frames that read the damaged store hold RocksDB iterators, each of which keeps the DB
    open and its LOCK taken after ``close()``: a store reopened at the same path in this process,
    as a rebuild does, would find it locked while anything still holds the error.
    """
    reason = str(error)
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        traceback.clear_frames(link.__traceback__)
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
    return reason


@dataclass
class RebuildState:
    """What ``/healthz`` says while a node refuses to serve: why, and how far its rebuild is."""

    reason: str
    phase: str = "found damage"
    refused: bool = False  # True: no rebuild will happen, the operator must act
    since: float = field(default_factory=time.time)

    def health(self) -> dict[str, str]:
        """The JSON body of ``/healthz`` (answered with 503)."""
        return {"status": "damaged" if self.refused else "rebuilding", "reason": self.reason, "phase": self.phase,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since))}


def pending(data_dir: Path) -> str | None:
    """The reason of a rebuild a crash or a stop interrupted, if the data dir holds one."""
    try:
        return str(json.loads((data_dir / MARKER).read_text())["reason"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a damaged marker: still a rebuild
        return f"rebuild marker unreadable ({exc})"


def set_aside(data_dir: Path, reason: str) -> Path | None:
    """Write the marker, then move everything else of the data dir into ``damaged-<UTC time>/``.

    Returns that directory (None if there was nothing to move). Copies beyond ``KEEP_DAMAGED``
    are deleted, each logged (see there).
    """
    marker = data_dir / MARKER
    if not marker.exists():
        tmp = data_dir / (MARKER + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"reason": reason, "since": time.time()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, marker)
        _fsync_dir(str(data_dir))
    names = [p for p in data_dir.iterdir()
             if p.name not in (MARKER, MARKER + ".tmp") and not p.name.startswith(DAMAGED_PREFIX)]
    if not names:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, n = data_dir / f"{DAMAGED_PREFIX}{stamp}", 1
    while target.exists():
        n += 1
        target = data_dir / f"{DAMAGED_PREFIX}{stamp}.{n}"
    target.mkdir()
    for path in names:
        path.rename(target / path.name)
    _fsync_dir(str(target))
    _fsync_dir(str(data_dir))
    log.warning("damaged data moved aside to %s (kept for inspection)", target)
    copies = sorted(p for p in data_dir.iterdir() if p.name.startswith(DAMAGED_PREFIX))
    for old in copies[1:len(copies) - KEEP_DAMAGED + 1]:
        log.warning("deleting the damaged copy %s (%d are kept: the first and the newest)", old, KEEP_DAMAGED)
        shutil.rmtree(old, ignore_errors=True)
    return target


def finish(data_dir: Path) -> None:
    """The rebuild is over: remove the marker."""
    (data_dir / MARKER).unlink(missing_ok=True)
    _fsync_dir(str(data_dir))


def leave(address: str, seeds: list[str], password: str | None, stop: threading.Event) -> bool:
    """Have the cluster commit the removal of ``address``, retrying through ``seeds`` while no
    quorum or leader answers; True once it is no member any more, False if ``stop`` was set."""
    attempt = 0
    while not stop.is_set():
        attempt += 1
        errors = []
        for seed in seeds:
            try:  # idempotent: a removal committed after a lost answer is "nothing to do" next time
                removed, leader = admin.remove_member(address, seed, password=password)
            except ClusterAdminError as exc:  # MembershipUnknown among them: asked again
                errors.append(str(exc))
                continue
            how = "removal committed" if removed else "no member any more"
            log.info("%s is out of the cluster (%s; leader %s)", address, how, leader)
            return True
        log.warning("rebuild: the cluster has not removed %s yet (attempt %d; %s); retrying", address, attempt,
                    "; ".join(errors))
        stop.wait(RETRY_INTERVAL)
    return False
