"""Monitoring HTTP endpoint (``-m/--http-port``): /healthz, /varz, /connz in nats-server's JSON shape
(app.py adds /raftz, /routez, /readyz and the registry behind /metrics, Prometheus' text format).

A deliberately small HTTP/1.1 responder (GET only, one request per connection) on the broker's
event loop; it reads server state through the ``Server`` methods and never changes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from mq9cluster import metrics
from mq9cluster.server.server import Server

log = logging.getLogger("mq9cluster.monitor")

MAX_REQUEST_HEAD = 8192


class Monitor:
    """Serves the monitoring endpoints of one server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._listener: asyncio.base_events.Server | None = None
        self.metrics: CollectorRegistry | None = None  # set by app.py; /metrics answers 404 without it
        self.routes: dict[str, Callable[[dict[str, list[str]]], tuple[int, dict | bytes]]] = {
            "/healthz": self._healthz,
            "/varz": lambda query: (200, self.server.varz()),
            "/connz": self._connz,
            "/metrics": self._metrics,
        }

    async def start(self, host: str, port: int) -> None:
        """Bind the monitoring port."""
        self._listener = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        log.info("monitoring on http://%s:%d", host, self.port)

    @property
    def port(self) -> int:
        """The bound monitoring port."""
        assert self._listener is not None
        return self._listener.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stop accepting monitoring requests."""
        if self._listener is not None:
            self._listener.close()

    def _healthz(self, query: dict[str, list[str]]) -> tuple[int, dict]:
        ready = self.routes.get("/readyz")
        if "ready" in query and ready is not None:  # /healthz?ready is /readyz
            return ready(query)
        if self.server.lame_duck:
            return 503, {"status": "unavailable", "error": "lame duck mode"}
        return 200, {"status": "ok"}

    def _metrics(self, query: dict[str, list[str]]) -> tuple[int, dict | bytes]:
        if self.metrics is None:
            return 404, {"error": "no metrics on this server"}
        return 200, metrics.exposition(self.metrics)

    @staticmethod
    def flag(query: dict[str, list[str]], name: str) -> bool:
        """A boolean query parameter (``?subs=1``) as nats-server reads it."""
        return query.get(name, ["0"])[0] in ("1", "true", "detail")

    def _connz(self, query: dict[str, list[str]]) -> tuple[int, dict]:
        subs = self.flag(query, "subs")
        try:
            offset = int(query.get("offset", ["0"])[0])
            limit = int(query.get("limit", ["1024"])[0])
        except ValueError:
            return 400, {"error": "offset and limit must be integers"}
        return 200, self.server.connz(subs=subs, offset=max(offset, 0), limit=max(limit, 1))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            status, body = self.respond(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            status, body = 400, {"error": "bad request"}
        if isinstance(body, bytes):
            payload, content_type = body, CONTENT_TYPE_LATEST
        else:
            payload, content_type = json.dumps(body, indent=2).encode(), "application/json"
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
        writer.write(
            f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload
        )
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    def respond(self, head: bytes) -> tuple[int, dict | bytes]:
        """Status and JSON body for one request head."""
        if len(head) > MAX_REQUEST_HEAD:
            return 400, {"error": "request head too large"}
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3:
            return 400, {"error": "malformed request line"}
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return 405, {"error": f"method {method} not allowed"}
        url = urlsplit(target)
        route = self.routes.get(url.path.rstrip("/") or "/")
        if route is None:
            return 404, {"error": f"no endpoint {url.path}", "endpoints": sorted(self.routes)}
        return route(parse_qs(url.query, keep_blank_values=True))
