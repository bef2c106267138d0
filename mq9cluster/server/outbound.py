"""Outbound buffering and slow-consumer protection for one client connection.

Frames queued during one event-loop iteration are written with a single ``transport.write``
at the end of it, or earlier in growing pieces (``WRITE_AT``) when more is queued. A client whose
unsent bytes pass ``max_pending``, or whose socket stays blocked longer than
``write_deadline``, is cut; nobody else waits for it. Owns no parsing and no routing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# Queued bytes that go out at once instead of at the end of the loop iteration: the first
# replies of a large burst (the acks of a group-commit entry of hundreds of sends) reach the
# client while the rest are still being built, so it works on them meanwhile. Each early write
# doubles the threshold until the iteration ends: a long burst costs a few writes, not one
# per WRITE_AT bytes.
WRITE_AT = 2048


class Outbound:
    """The bytes waiting to go to one client, and the rules that cut a client that cannot keep up."""

    __slots__ = (
        "_transport", "_loop", "_max_pending", "_write_deadline", "_on_slow",
        "_buf", "_scheduled", "_deadline_timer", "_holding", "closed", "_write_at",
    )

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        loop: asyncio.AbstractEventLoop,
        max_pending: int,
        write_deadline: float,
        on_slow: Callable[[str], None],
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._max_pending = max_pending
        self._write_deadline = write_deadline
        self._on_slow = on_slow
        self._buf = bytearray()
        self._scheduled = False
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._holding = False
        self.closed = False
        self._write_at = WRITE_AT

    def write(self, frame: bytes) -> None:
        """Queue one frame; it goes out at the end of this loop iteration, or at once when
        ``WRITE_AT`` bytes are queued (twice as many after each such write in one iteration)."""
        self._buf += frame
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)
        elif len(self._buf) > self._max_pending:
            self._on_slow("pending bytes over max_pending")
        elif len(self._buf) >= self._write_at and self._may_write_early():
            self._write_at *= 2
            self._write()

    def _may_write_early(self) -> bool:
        """Not while held, closed or closing: an early write runs inside whoever queued the frame
        (another client's publish), which a transport that refuses the write must not break."""
        return not self._holding and not self.closed and not self._transport.is_closing()

    def flush(self) -> None:
        """Hand everything queued to the transport now."""
        self._scheduled = False
        self._write_at = WRITE_AT
        if self.closed or self._holding or not self._buf:
            return
        self._write()

    def _write(self) -> None:
        buf, self._buf = self._buf, bytearray()
        self._transport.write(buf)
        if self._transport.get_write_buffer_size() > self._max_pending:
            self._on_slow("pending bytes over max_pending")

    def hold(self) -> None:
        """Keep frames queued (none reach the transport) until ``switch_transport``: the TLS
        handshake owns the socket meanwhile."""
        self._holding = True

    def switch_transport(self, transport: asyncio.WriteTransport) -> None:
        """Write to ``transport`` from now on (the TLS one) and send what was held."""
        self._transport = transport
        self._holding = False
        self.flush()

    def pending(self) -> int:
        """Bytes not yet handed to the kernel."""
        if self.closed:
            return 0
        if self._holding:
            return len(self._buf)
        return len(self._buf) + self._transport.get_write_buffer_size()

    def writing_paused(self) -> None:
        """The transport's buffer is above its high-water mark: start the write deadline."""
        if self._deadline_timer is None:
            self._deadline_timer = self._loop.call_later(
                self._write_deadline, self._on_slow, "write deadline exceeded"
            )

    def writing_resumed(self) -> None:
        """The socket drained: the deadline no longer applies."""
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    def close(self) -> None:
        """Stop all timers; later frames are dropped."""
        self.closed = True
        self.writing_resumed()
        self._buf = bytearray()
