"""What every TCP peer of the server shares: the outbound buffer, keepalive PINGs, closing.

A client connection (client.py) and a route to another node (routes.py) are both a
``Connection``; each says what it does with its input and what happens when it goes away
(``_released``). Owns no parsing and no routing.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from mq9cluster.protocol import encode
from mq9cluster.protocol.events import Event
from mq9cluster.protocol.parser import Parser
from mq9cluster.server.outbound import Outbound

if TYPE_CHECKING:
    from mq9cluster.config import Settings

PING = encode.PING_FRAME


def rfc3339(ts: float) -> str:
    """A timestamp as nats-server's monitoring JSON writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


class Connection(asyncio.Protocol):
    """One TCP connection: bounded output (slow peers are cut), keepalive, close with -ERR."""

    def __init__(self, settings: "Settings", parser: Parser) -> None:
        self.settings = settings
        self.parser = parser
        self.closed = False
        self.pings_out = 0
        self.started = time.time()
        self.last_activity = self.started
        self.ip = ""
        self.port = 0
        self.in_msgs = self.in_bytes = self.out_msgs = self.out_bytes = 0
        self.transport: asyncio.Transport | None = None
        self.out: Outbound | None = None
        self._loop = asyncio.get_running_loop()
        self._ping_timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        settings = self.settings
        self.transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        self.ip, self.port = peer[0], peer[1]
        self.out = Outbound(transport, self._loop, settings.max_pending, settings.write_deadline, self._slow)
        self._ping_timer = self._loop.call_later(settings.first_ping_delay, self._ping_due)

    def _received(self, data: bytes) -> list[Event]:
        """The events ``data`` completes (the peer was active just now)."""
        self.last_activity = time.time()
        return self.parser.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release("connection lost" if exc is None else f"connection lost: {exc}")

    def pause_writing(self) -> None:
        if self.out is not None:
            self.out.writing_paused()

    def resume_writing(self) -> None:
        if self.out is not None:
            self.out.writing_resumed()

    # -- output ------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue a protocol frame to this peer."""
        out = self.out
        if out is not None and not self.closed:
            out.write(frame)

    def monitor_fields(self, now: float) -> dict:
        """What /connz and /routez report for every connection."""
        return {
            "ip": self.ip, "port": self.port,
            "start": rfc3339(self.started), "last_activity": rfc3339(self.last_activity),
            "uptime": f"{int(now - self.started)}s",
            "in_msgs": self.in_msgs, "out_msgs": self.out_msgs,
            "in_bytes": self.in_bytes, "out_bytes": self.out_bytes,
        }

    # -- keepalive ---------------------------------------------------------------------------

    def _ping_early(self) -> bool:
        """Whether to PING before the peer has been idle a whole ping_interval."""
        return False

    def _may_ping(self) -> bool:
        """Whether keepalive PINGs go to this peer yet."""
        return True

    def _ping_due(self) -> None:
        settings = self.settings
        self._ping_timer = None
        if self.closed:
            return
        if not self._may_ping():
            self._ping_timer = self._loop.call_later(settings.first_ping_delay, self._ping_due)
            return
        idle = time.time() - self.last_activity
        if self.pings_out or idle >= settings.ping_interval or self._ping_early():
            if self.pings_out + 1 > settings.ping_max:
                self.close("stale connection", error="Stale Connection")
                return
            self.pings_out += 1
            self.send(PING)
        self._ping_timer = self._loop.call_later(settings.ping_interval, self._ping_due)

    # -- closing -----------------------------------------------------------------------------

    def _on_slow(self) -> None:
        """Called once, before the release, when this peer is cut for not reading fast enough."""

    def _slow(self, why: str) -> None:
        """Cut a slow peer at once: no -ERR (as nats-server), buffered output dropped."""
        if not self.closed:
            self._on_slow()
            self._release(f"slow consumer: {why}")
            self.transport.abort()

    def close(self, reason: str, error: str | None = None) -> None:
        """Flush what is queued (plus ``-ERR 'error'`` if given) and close the connection."""
        if self.closed:
            return
        if error is not None:
            self.send(encode.err(error))
        self.out.flush()
        self._release(reason)
        self.transport.close()

    def _release(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if self.out is not None:
            self.out.close()
        self._released(reason)

    def _released(self, reason: str) -> None:
        """The connection is gone (closed, cut or lost): forget what hangs on it."""
