"""Log set-up: one line per event, UTC timestamps, a TRACE level below DEBUG (nats-server's -V)."""

from __future__ import annotations

import logging
import sys
import time

TRACE = 5
logging.addLevelName(TRACE, "TRACE")


class _LineFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def configure(level: int) -> None:
    """Send mq9cluster's log lines to stderr at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("mq9cluster")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
