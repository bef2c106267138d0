"""Sans-IO NATS protocol: bytes -> events (``Parser``), events -> bytes (``encode``), subject
and header syntax (``subject``, ``headers``); also the route protocol spoken between nodes
(``Parser(route=True)``, ``encode.route_interest``/``rmsg``...).

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
    RouteMsg,
    RouteSub,
    RouteUnsub,
    Sub,
    Unsub,
    Violation,
)
from mq9cluster.protocol.parser import Parser

__all__ = [
    "OK", "PING", "PONG", "Connect", "Err", "Event", "Info", "Msg", "Ok", "Parser", "Ping",
    "Pong", "Pub", "RouteMsg", "RouteSub", "RouteUnsub", "Sub", "Unsub", "Violation", "encode",
    "headers", "subject",
]
