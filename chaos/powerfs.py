"""A FUSE filesystem that forgets, at a simulated power loss, every write that was not fsynced.

``python -m chaos.powerfs BACKING MOUNTPOINT CRASH_MARKER`` mounts BACKING at MOUNTPOINT (as a
passthrough: reads see every write at once, like the page cache) and keeps, per file, an undo
record of what changed since the file was last ``fsync``ed or ``fdatasync``ed: the size it had
then and the original bytes of every 4 KiB page written or truncated away since. ``fsync``
drops the record (that content is now durable). When the filesystem is unmounted and
CRASH_MARKER exists, the power went out: every record is played back, so each file holds
exactly what was durable at its last fsync, and a file created and never fsynced is empty.
Without the marker an unmount is a clean shutdown and nothing is undone.

The model is strict for file data (the part a missing fsync loses on any filesystem) and
lenient for names: create, rename, unlink and mkdir persist at once, as if every directory were
fsynced. A rename of a file that was never fsynced therefore leaves an empty file under the new
name, the classic result of "write temp, rename, no fsync" on a real power loss.

The orchestrator (``chaos.cluster``) kills the node with SIGKILL first, so no write is in flight.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

PAGE = 4096
log = logging.getLogger("chaos.powerfs")


@dataclass
class Undo:
    """How to bring one file back to its last durable state."""

    size: int  # its size when it was last durable
    pages: dict[int, bytes] = field(default_factory=dict)  # page number -> durable bytes (below size)


class UndoLog:
    """Undo records by path (relative to the backing root), kept current across renames."""

    def __init__(self) -> None:
        self.records: dict[str, Undo] = {}
        self.lock = threading.Lock()

    def before_change(self, path: str, fd: int, start: int, end: int) -> None:
        """Save what [start, end) of the file held, if it was durable and not saved already."""
        undo = self.records.get(path)
        if undo is None:
            undo = self.records[path] = Undo(os.fstat(fd).st_size)
        end = min(end, undo.size)
        for page in range(start // PAGE, -(-end // PAGE)):
            if page not in undo.pages:
                undo.pages[page] = os.pread(fd, PAGE, page * PAGE)

    def created(self, path: str) -> None:
        self.records[path] = Undo(0)

    def synced(self, path: str) -> None:
        self.records.pop(path, None)

    def renamed(self, old: str, new: str) -> None:
        for path in list(self.records):
            if path == new or path.startswith(new + "/"):
                del self.records[path]
        for path in list(self.records):
            if path == old or path.startswith(old + "/"):
                self.records[new + path[len(old):]] = self.records.pop(path)

    def removed(self, path: str) -> None:
        self.records.pop(path, None)

    def play_back(self, root: Path) -> tuple[int, int]:
        """Undo every unsynced change under ``root``; (files, bytes dropped)."""
        files = dropped = 0
        for path, undo in self.records.items():
            try:
                fd = os.open(root / path, os.O_WRONLY)
            except FileNotFoundError:
                continue
            try:
                size = os.fstat(fd).st_size
                for page, data in undo.pages.items():
                    os.pwrite(fd, data, page * PAGE)
                os.ftruncate(fd, undo.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            files += 1
            dropped += max(0, size - undo.size) + sum(len(d) for d in undo.pages.values())
        self.records.clear()
        return files, dropped


def make_operations(root: Path, undo: UndoLog):
    """The fusepy ``Operations`` of a power-loss filesystem over ``root``."""
    from fuse import FuseOSError, Operations  # imported here: fusepy loads libfuse at import

    class PowerLossFS(Operations):
        def __init__(self) -> None:
            self.paths: dict[int, str] = {}  # open fd -> path

        def _full(self, path: str) -> str:
            return str(root / path.lstrip("/"))

        @staticmethod
        def _key(path: str) -> str:
            return path.lstrip("/")

        def __call__(self, op, *args):
            try:
                return super().__call__(op, *args)
            except OSError as exc:
                raise FuseOSError(exc.errno or errno.EIO) from None

        # -- names -------------------------------------------------------------------------------

        def access(self, path, mode):
            if not os.access(self._full(path), mode):
                raise FuseOSError(errno.EACCES)

        def getattr(self, path, fh=None):
            st = os.lstat(self._full(path))
            return {key: getattr(st, key) for key in ("st_atime", "st_ctime", "st_gid", "st_mode", "st_mtime",
                                                       "st_nlink", "st_size", "st_uid")}

        def readdir(self, path, fh):
            return [".", "..", *os.listdir(self._full(path))]

        def readlink(self, path):
            return os.readlink(self._full(path))

        def mkdir(self, path, mode):
            os.mkdir(self._full(path), mode)

        def rmdir(self, path):
            os.rmdir(self._full(path))

        def unlink(self, path):
            os.unlink(self._full(path))
            with undo.lock:
                undo.removed(self._key(path))

        def symlink(self, name, target):
            os.symlink(target, self._full(name))

        def link(self, target, name):
            os.link(self._full(name), self._full(target))

        def rename(self, old, new):
            os.rename(self._full(old), self._full(new))
            with undo.lock:
                undo.renamed(self._key(old), self._key(new))
                for fd, path in list(self.paths.items()):
                    if path == self._key(old) or path.startswith(self._key(old) + "/"):
                        self.paths[fd] = self._key(new) + path[len(self._key(old)):]

        def chmod(self, path, mode):
            os.chmod(self._full(path), mode)

        def chown(self, path, uid, gid):
            os.chown(self._full(path), uid, gid)

        def utimens(self, path, times=None):
            os.utime(self._full(path), times)

        def statfs(self, path):
            st = os.statvfs(self._full(path))
            return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                       "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

        # -- data --------------------------------------------------------------------------------

        def open(self, path, flags):
            # FUSE writes carry their offsets (no O_APPEND); the undo log reads what a write replaces
            flags &= ~(os.O_APPEND | os.O_TRUNC)
            if flags & os.O_ACCMODE == os.O_WRONLY:
                flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
            fd = os.open(self._full(path), flags)
            self.paths[fd] = self._key(path)
            if flags & os.O_TRUNC:
                with undo.lock:
                    undo.before_change(self._key(path), fd, 0, 1 << 62)
                    os.ftruncate(fd, 0)
            return fd

        def create(self, path, mode, fi=None):
            fd = os.open(self._full(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            os.close(fd)
            fd = os.open(self._full(path), os.O_RDWR)
            self.paths[fd] = self._key(path)
            with undo.lock:
                undo.created(self._key(path))
            return fd

        def read(self, path, size, offset, fh):
            return os.pread(fh, size, offset)

        def write(self, path, data, offset, fh):
            with undo.lock:
                undo.before_change(self.paths[fh], fh, offset, offset + len(data))
                return os.pwrite(fh, data, offset)

        def truncate(self, path, length, fh=None):
            fd = fh if fh is not None else os.open(self._full(path), os.O_RDWR)
            try:
                with undo.lock:
                    undo.before_change(self._key(path), fd, length, 1 << 62)
                    os.ftruncate(fd, length)
            finally:
                if fh is None:
                    os.close(fd)

        def flush(self, path, fh):
            return 0

        def release(self, path, fh):
            self.paths.pop(fh, None)
            os.close(fh)

        def fsync(self, path, datasync, fh):
            with undo.lock:
                undo.synced(self.paths.get(fh, self._key(path)))

        def fsyncdir(self, path, datasync, fh):
            return 0

    return PowerLossFS()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s powerfs %(message)s")
    backing, mountpoint, marker = (Path(a) for a in argv)
    backing.mkdir(parents=True, exist_ok=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    from fuse import FUSE

    undo = UndoLog()
    FUSE(make_operations(backing, undo), str(mountpoint), foreground=True, nothreads=False, default_permissions=True)
    if marker.exists():
        files, dropped = undo.play_back(backing)
        marker.unlink()
        log.info("power loss: %d files rolled back to their last fsync, %d bytes dropped", files, dropped)
    else:
        log.info("clean unmount: nothing dropped (%d files had unsynced changes)", len(undo.records))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
