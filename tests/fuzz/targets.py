"""Fuzz targets: the NATS protocol parser and the mq9 request parsing, fed arbitrary bytes.

Each target takes one input and raises AssertionError when an invariant breaks; any other
exception escaping is a bug as well. Used by the bounded CI run (test_fuzz.py, hypothesis) and
by the long run (run.py, atheris when installed).
"""

from __future__ import annotations

import json

from mq9cluster.mailbox import ops
from mq9cluster.mailbox.service import MailboxService
from mq9cluster.mailbox.subjects import Invalid, parse_request, parse_subscription
from mq9cluster.protocol import events
from mq9cluster.protocol.parser import Parser
from tests.fuzz.seeds import SEEDS  # noqa: F401  (re-exported next to TARGETS)

MAX_PAYLOAD = 4096
MAX_CONTROL_LINE = 256
#: Most bytes a parser may hold back: a partial payload with its CRLF (see Parser's docstring).
MAX_BUFFERED = max(MAX_CONTROL_LINE + 1, MAX_PAYLOAD + 2)

_EVENT_TYPES = tuple(
    kind for kind in vars(events).values() if isinstance(kind, type) and issubclass(kind, tuple)
)
_SERVICE = MailboxService(None, None, None, lambda: True, max_ttl=3600, replay_window=1 << 20)


def _chunks(data: bytes, seed: int) -> list[bytes]:
    """``data`` cut into pieces whose lengths follow the seed (1 byte at a time for seed 0)."""
    if seed == 0:
        return [data[i:i + 1] for i in range(len(data))]
    step = seed % 61 + 1
    return [data[i:i + step] for i in range(0, len(data), step)] or [b""]


def parser_input(data: bytes) -> None:
    """Feed ``data`` (first byte: mode and cut) to a parser; events are well-formed and the held
    bytes stay bounded; after a violation nothing more comes out."""
    if not data:
        return
    mode, body = data[0], data[1:]
    parser = Parser(MAX_PAYLOAD, MAX_CONTROL_LINE, accept_msg=bool(mode & 1), route=bool(mode & 2))
    dead = False
    for chunk in _chunks(body, mode >> 2):
        out = parser.feed(chunk)
        assert not (dead and out), f"events after a violation: {out!r}"
        for event in out:
            assert isinstance(event, _EVENT_TYPES), event
            if isinstance(event, events.Violation):
                dead = True
            elif isinstance(event, (events.Pub, events.Msg, events.RouteMsg)):
                assert len(event.payload) + len(event.headers or b"") <= MAX_PAYLOAD
        assert parser.buffered <= MAX_BUFFERED, parser.buffered


def mq9_input(data: bytes) -> None:
    """A subject and a CREATE body (split at the first NUL): each parses to a request or an error."""
    raw_subject, _, body = data.partition(b"\0")
    subject = raw_subject.decode("utf-8", "replace")
    request = parse_request("$mq9.AI." + subject)
    if isinstance(request, Invalid):
        assert isinstance(request.error, str) and request.error
    parse_subscription("$mq9.AI." + subject)
    result = _SERVICE.create_op(body)
    if isinstance(result, str):
        assert result
    else:
        assert isinstance(result, ops.CreateOp)
        assert ops.decode(ops.encode(result)) == result
        json.dumps(result._asdict())


TARGETS = {"parser": parser_input, "mq9": mq9_input}
