"""Sans-IO NATS protocol: bytes -> events (``Parser``), events -> bytes (``encode``), subject
and header syntax (``subject``, ``headers``).

Owns the wire format only. Must not touch sockets, asyncio, clocks or other mq9cluster packages.
"""

from mq9cluster.protocol import encode, headers, subject
from mq9cluster.protocol.events import (
    OK,
    PING,
    PONG,
    Connect,
    Err,
    Event,
    Info,
    Msg,
    Ok,
    Ping,
    Pong,
    Pub,
    Sub,
    Unsub,
    Violation,
)
from mq9cluster.protocol.parser import Parser

__all__ = [
    "OK", "PING", "PONG", "Connect", "Err", "Event", "Info", "Msg", "Ok", "Parser", "Ping",
    "Pong", "Pub", "Sub", "Unsub", "Violation", "encode", "headers", "subject",
]
