"""NATS header blocks: ``NATS/1.0[ status[ description]]\\r\\nName: Value\\r\\n...\\r\\n``.

Owns parsing and building of header blocks (the server never parses client headers on the hot
path; this is for headers it writes itself, e.g. mailbox replies). Must not touch sockets,
asyncio, clocks or other mq9cluster packages.
"""

from __future__ import annotations

from dataclasses import dataclass

_VERSION = b"NATS/1.0"
_CRLF = b"\r\n"
_BLANKS = " \t"

NO_RESPONDERS = b"NATS/1.0 503\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Headers:
    """A parsed header block; ``fields`` keeps order, case and repeated names."""

    status: int | None
    description: str
    fields: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        """The first value of ``name`` (case-insensitive), or None."""
        folded = name.lower()
        for key, value in self.fields:
            if key.lower() == folded:
                return value
        return None


def _valid_name(name: str) -> bool:
    """A header name: visible ASCII without ':'."""
    return bool(name) and name.isascii() and name.isprintable() and " " not in name \
        and ":" not in name


def _valid_text(text: str) -> bool:
    """A value or description: no CR or LF (they would end the line)."""
    return "\r" not in text and "\n" not in text


def _status_line(rest: str) -> tuple[int | None, str]:
    """Status and description from what follows ``NATS/1.0`` on the first line."""
    if not rest:
        return None, ""
    if rest[0] not in _BLANKS:
        raise ValueError(f"bad header version line: NATS/1.0{rest!r}")
    code, _, description = rest.strip(_BLANKS).partition(" ")
    if len(code) != 3 or not code.isascii() or not code.isdigit():
        raise ValueError(f"bad header status: {code!r}")
    return int(code), description.strip(_BLANKS)


def _field(line: str) -> tuple[str, str]:
    """``Name: Value`` with the value stripped of surrounding blanks."""
    name, colon, value = line.partition(":")
    if not colon or not _valid_name(name):
        raise ValueError(f"bad header line: {line!r}")
    return name, value.strip(_BLANKS)


def parse(block: bytes) -> Headers:
    """Parse a complete header block; raise ValueError if it is malformed."""
    if not block.startswith(_VERSION) or not block.endswith(_CRLF + _CRLF):
        raise ValueError(f"not a NATS/1.0 header block: {block[:32]!r}")
    lines = block[:-4].decode("utf-8").split("\r\n")
    if any("\r" in line or "\n" in line for line in lines):
        raise ValueError("bare CR or LF in header block")
    status, description = _status_line(lines[0][len(_VERSION):])
    return Headers(status, description, [_field(line) for line in lines[1:]])


def build(fields: list[tuple[str, str]], status: int | None = None,
          description: str = "") -> bytes:
    """Build a header block; raise ValueError for names or values that would break it."""
    if status is None and description:
        raise ValueError("a description needs a status")
    if status is not None and not 100 <= status <= 999:
        raise ValueError(f"status must have 3 digits: {status}")
    if not _valid_text(description):
        raise ValueError(f"bad description: {description!r}")
    first = "NATS/1.0" + (f" {status}" if status is not None else "") + \
        (f" {description}" if description else "")
    lines = [first]
    for name, value in fields:
        if not _valid_name(name) or not _valid_text(value):
            raise ValueError(f"bad header field: {name!r}: {value!r}")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
