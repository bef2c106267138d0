"""Optional: the same inputs sent to a real nats-server get the reaction the parser predicts."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from mq9cluster.protocol import Err, Parser, Sub
from mq9cluster.protocol.subject import valid_subscribe_subject

from .errors import ERROR_CASES
from .frames import CLIENT_FRAMES
from .test_subject import SUBJECTS

pytestmark = [
    pytest.mark.wire,
    pytest.mark.skipif(shutil.which("nats-server") is None, reason="nats-server not installed"),
]

PREAMBLE = b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'
PEDANTIC = b'CONNECT {"verbose":false,"pedantic":true,"headers":true}\r\n'
_WHITESPACE = b" \t\r\n\x0b\x0c"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    port = _free_port()
    process = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield port
    finally:
        process.terminate()
        process.wait(5)


def exchange(port: int, data: bytes, preamble: bytes = PREAMBLE) -> tuple[bytes, list[str], bool]:
    """Send ``preamble + data`` (+ PING if ``data`` ends a line); return the INFO line, the
    -ERR texts received and whether the server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        info = b""
        while not info.endswith(b"\r\n"):
            info += sock.recv(1)
        out = b""
        try:
            sock.sendall(preamble + data + (b"PING\r\n" if data.endswith(b"\n") else b""))
            while b"PONG\r\n" not in out:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
        closed = b"PONG\r\n" not in out
    errors = [event.text for event in Parser(accept_msg=True).feed(out) if isinstance(event, Err)]
    return info, errors, closed


def test_info_line_has_a_space_before_crlf(server_port: int) -> None:
    info, _, _ = exchange(server_port, b"PING\r\n")
    assert info.startswith(b"INFO {") and info.endswith(b"} \r\n")


@pytest.mark.parametrize(("data", "expected"), ERROR_CASES,
                         ids=[repr(data[:30]) for data, _ in ERROR_CASES])
def test_violations_match_nats_server(server_port: int, data: bytes,
                                      expected: tuple[str, bool]) -> None:
    text, send_err = expected
    _, errors, closed = exchange(server_port, data)
    assert closed
    assert errors == ([text] if send_err else [])


# nats-server closes a client that sends -ERR: that is the server's choice, not framing.
WIRE_FRAMES = [(frame, events[0]) for frame, events in CLIENT_FRAMES
               if not isinstance(events[0], Err)]


@pytest.mark.parametrize(("frame", "event"), WIRE_FRAMES,
                         ids=[repr(frame[:30]) for frame, _ in WIRE_FRAMES])
def test_valid_frames_keep_the_connection(server_port: int, frame: bytes, event: object) -> None:
    bad_subject = isinstance(event, Sub) and not valid_subscribe_subject(event.subject)
    assert exchange(server_port, frame)[1:] == (["Invalid Subject"] if bad_subject else [], False)


WIRE_SUBJECTS = [row for row in SUBJECTS
                 if row[0] and not any(byte in _WHITESPACE for byte in row[0])]


@pytest.mark.parametrize(("subject", "sub_ok", "pub_ok", "wildcard"), WIRE_SUBJECTS,
                         ids=[repr(row[0]) for row in WIRE_SUBJECTS])
def test_subject_validity_matches_nats_server(server_port: int, subject: bytes, sub_ok: bool,
                                              pub_ok: bool, wildcard: bool) -> None:
    _, errors, closed = exchange(server_port, b"SUB %b 1\r\n" % subject)
    assert (errors, closed) == ([] if sub_ok else ["Invalid Subject"], False)
    _, errors, closed = exchange(server_port, b"PUB %b 0\r\n\r\n" % subject, PEDANTIC)
    assert (errors, closed) == ([] if pub_ok else ["Invalid Publish Subject"], False)
