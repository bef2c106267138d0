"""A raw-socket NATS peer for wire tests: send exact bytes, read exact bytes, see the close."""

from __future__ import annotations

import json
import socket
import time


class WireClient:
    """One TCP connection to a broker, read with deadlines (no NATS client library in between)."""

    def __init__(self, port: int, timeout: float = 2.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.closed = False
        line = self.read_line()
        assert line.startswith(b"INFO {") and line.endswith(b" \r\n"), line
        self.info = json.loads(line[5:-3])

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False when the deadline passed or the peer closed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.closed:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        return True

    def read_line(self) -> bytes:
        """The next CRLF-terminated line (or what was left before the close)."""
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self.buf:
            if not self._fill(deadline):
                line, self.buf = self.buf, b""
                return line
        line, _, self.buf = self.buf.partition(b"\n")
        return line + b"\n"

    def read_exactly(self, expected: bytes) -> bytes:
        """Read len(expected) bytes (fewer if the peer closes or the deadline passes)."""
        deadline = time.monotonic() + self.timeout
        while len(self.buf) < len(expected) and self._fill(deadline):
            pass
        got, self.buf = self.buf[: len(expected)], self.buf[len(expected):]
        return got

    def read_all_until_close(self, wait: float | None = None) -> bytes:
        """Everything the peer sends until it closes (or ``wait`` seconds pass)."""
        deadline = time.monotonic() + (self.timeout if wait is None else wait)
        while self._fill(deadline):
            pass
        got, self.buf = self.buf, b""
        return got

    def drain_quiet(self, wait: float = 0.2) -> bytes:
        """What arrives within ``wait`` seconds (the connection may stay open)."""
        return self.read_all_until_close(wait)

    def handshake(self, **options) -> None:
        """CONNECT (non-verbose unless asked) + PING, and expect PONG first."""
        opts = {"verbose": False, "pedantic": False, **options}
        self.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        expect = b"+OK\r\nPONG\r\n" if opts["verbose"] else b"PONG\r\n"
        assert self.read_exactly(expect) == expect

    def ping_pong(self) -> bool:
        """True when the connection still answers PING."""
        try:
            self.send(b"PING\r\n")
        except OSError:
            return False
        return self.read_line() == b"PONG\r\n"

    def close(self) -> None:
        self.sock.close()
