"""One client connection: feeds its bytes to the protocol parser and acts on the events.

Owns the connection's state (CONNECT options, subscriptions by sid); the outbound buffer,
keepalive and closing come from ``Connection``. Routing between connections is the server's job (``Router``); this module
never looks at another client's subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import TYPE_CHECKING, Protocol

from mq9cluster.protocol import encode, subject
from mq9cluster.protocol.events import Connect, Err, Pong, Ping, Pub, Sub, Unsub, Violation
from mq9cluster.protocol.parser import Parser
from mq9cluster.server.auth import AUTH_TIMEOUT, AUTH_VIOLATION, Authenticator
from mq9cluster.server.connection import Connection
from mq9cluster.server.ratelimit import TokenBucket
from mq9cluster.server.tls import HANDSHAKE_TIMEOUT

if TYPE_CHECKING:
    from mq9cluster.config import Settings

log = logging.getLogger("mq9cluster.client")

OK = encode.OK_FRAME
PONG = encode.PONG_FRAME


class Subscription:
    """One SUB of one client. Identity-hashed: the subject index stores these objects."""

    __slots__ = ("client", "subject", "queue", "sid", "max_msgs", "delivered", "mailbox")

    def __init__(self, client: "Client", subject: bytes, queue: bytes | None, sid: bytes) -> None:
        self.client = client
        self.subject = subject
        self.queue = queue
        self.sid = sid
        self.max_msgs = 0
        self.delivered = 0
        self.mailbox = False  # delivered by the mailbox service, not through the subject index

    @property
    def closed(self) -> bool:
        """The connection is gone, or this subscription was removed from it."""
        return self.client.closed or self.client.subs.get(self.sid) is not self

    def send(self, subject: bytes, payload: bytes, headers: bytes | None) -> None:
        """Deliver one message published by the broker itself (mailbox deliveries, events)."""
        self.client.deliver(self, subject, None, payload, headers)

    def pending(self) -> int:
        """Bytes queued to this subscription's connection."""
        out = self.client.out
        return out.pending() if out is not None else 0


class Router(Protocol):
    """What a connection needs from the server."""

    settings: "Settings"
    auth: Authenticator
    tls_context: ssl.SSLContext | None

    def info_for(self, client: "Client") -> bytes: ...
    def publish(self, origin: "Client", subj: bytes, reply: bytes | None, payload: bytes, hdrs: bytes | None) -> None: ...
    def subscribe(self, sub: Subscription) -> str | None: ...
    def unsubscribe(self, sub: Subscription) -> None: ...
    def slow_consumer(self, client: "Client") -> None: ...
    def auth_failed(self, client: "Client", why: str) -> None: ...
    def client_closed(self, client: "Client", reason: str) -> None: ...


class Client(Connection):
    """A NATS client connection as nats-server treats it."""

    def __init__(self, router: Router, cid: int) -> None:
        settings = router.settings
        super().__init__(settings, Parser(settings.max_payload, settings.max_control_line))
        self.router = router
        self.cid = cid
        self.subs: dict[bytes, Subscription] = {}
        # nats-server's defaults before (and in the absence of) CONNECT fields.
        self.verbose = True
        self.pedantic = True
        self.echo = True
        self.headers = False
        self.no_responders = False
        self.protocol = 0
        self.name = ""
        self.lang = ""
        self.version = ""
        self.connected = False
        self.info_ready = False  # got its first PONG: may receive async INFO
        self.user = ""  # the user name it authenticated as (never the password)
        self._held: list | None = None  # events read while a bcrypt check runs off the loop
        self._auth_timer: asyncio.TimerHandle | None = None
        self._tls_pending = False
        self._creates: TokenBucket | None = None  # made at the first create, when limited

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        info = self.router.info_for(self)
        if self.router.auth.required:
            self._auth_timer = self._loop.call_later(self.settings.auth_timeout, self._auth_timed_out)
        if self.router.tls_context is None:
            self.out.write(info)
        elif not self.closed:
            self._tls_pending = True
            self.out.hold()  # until the handshake is done, nothing but INFO reaches the socket
            self._loop.create_task(self._start_tls(self.router.tls_context, info))

    async def _start_tls(self, context: ssl.SSLContext, info: bytes) -> None:
        """Send INFO in plain text, then upgrade the socket to TLS, as nats-server does.

        INFO is written in the same loop step that hands the socket to the TLS protocol, so the
        client's ClientHello (its answer to INFO) can only reach the TLS layer.
        """
        if self.closed:
            return
        self.transport.write(info)
        try:
            tls = await self._loop.start_tls(
                self.transport, self, context, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
            log.info("TLS handshake failed cid=%d ip=%s: %s", self.cid, self.ip, exc)
            if not self.closed:
                self._release(f"TLS handshake failed: {exc}")
                self.transport.abort()
            return
        if tls is None or self.closed:
            return
        self.transport = tls
        self._tls_pending = False
        self.out.switch_transport(tls)

    def data_received(self, data: bytes) -> None:
        if self._tls_pending:  # plain bytes before INFO was even sent: not a NATS client
            self.close("plain-text input before the TLS handshake")
            return
        self._handle(self._received(data))

    def _handle(self, events: list) -> None:
        """Act on parsed events in order; stop and hold the rest while credentials are checked."""
        if self._held is not None:
            self._held.extend(events)
            return
        for index, event in enumerate(events):
            if self.closed:
                return
            kind = type(event)
            if not self.connected and kind is not Connect and kind is not Violation and self.router.auth.required:
                self._refuse(f"{kind.__name__.upper()} before CONNECT")
                return
            if kind is Pub:
                self._on_pub(event)
            elif kind is Sub:
                self._on_sub(event)
            elif kind is Unsub:
                self._on_unsub(event)
            elif kind is Ping:
                self.send(PONG)
                if self.connected:
                    self.info_ready = True
            elif kind is Pong:
                self.pings_out = 0
            elif kind is Connect:
                self._on_connect(event.options)
                if self._held is not None:
                    self._held.extend(events[index + 1:])
                    return
            elif kind is Violation:
                self._on_violation(event)
            elif kind is Err:
                self.close(f"client sent -ERR {event.text!r}")
            # +OK and INFO from a client are ignored, as nats-server does.

    # -- protocol operations -----------------------------------------------------------------

    def _on_connect(self, options: dict) -> None:
        if not isinstance(options, dict):
            self.close("CONNECT options are not a JSON object", error=None)
            return
        protocol = options.get("protocol", 0)
        if protocol not in (0, 1):
            self.close("invalid client protocol", error="invalid client protocol")
            return
        self.verbose = bool(options.get("verbose", True))
        self.pedantic = bool(options.get("pedantic", True))
        self.echo = bool(options.get("echo", True))
        self.headers = bool(options.get("headers", False))
        self.no_responders = bool(options.get("no_responders", False))
        if self.no_responders and not self.headers:
            self.close("no_responders without headers", error="no responders requires headers support")
            return
        self.protocol = protocol
        self.name = str(options.get("name") or "")
        self.lang = str(options.get("lang") or "")
        self.version = str(options.get("version") or "")
        auth = self.router.auth
        if auth.required and not self.connected:
            if auth.needs_slow_check:
                self._check_off_loop(options)
                return
            if not auth.check(options):
                self._refuse("wrong or missing credentials")
                return
        self._connected(options)

    def _connected(self, options: dict) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        if self.router.auth.user is not None:
            self.user = str(options.get("user"))
        self.connected = True
        if self.verbose:
            self.send(OK)
        log.debug("client connected cid=%d ip=%s name=%r lang=%s", self.cid, self.ip, self.name, self.lang)

    # -- authentication --------------------------------------------------------------------

    def _check_off_loop(self, options: dict) -> None:
        """Run a bcrypt check in a worker thread; hold this client's input until it answers."""
        self._held = []
        self.transport.pause_reading()
        future = self._loop.run_in_executor(None, self.router.auth.check, options)
        future.add_done_callback(lambda done: self._checked(done.result(), options))

    def _checked(self, ok: bool, options: dict) -> None:
        held, self._held = self._held or [], None
        if self.closed:
            return
        if not ok:
            self._refuse("wrong or missing credentials")
            return
        self._connected(options)
        self.transport.resume_reading()
        self._handle(held)

    def _refuse(self, why: str) -> None:
        self.router.auth_failed(self, why)
        self.close(f"authorization violation: {why}", error=AUTH_VIOLATION)

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if not self.connected and not self.closed:
            self.router.auth_failed(self, "no CONNECT in time")
            self.close("authentication timeout", error=AUTH_TIMEOUT)

    def _on_pub(self, event: Pub) -> None:
        self.in_msgs += 1
        self.in_bytes += len(event.payload)
        if event.headers is not None and not self.headers:
            self.close("HPUB from a client without header support", error=None)
            return
        if self.pedantic and not subject.valid_publish_subject(event.subject):
            self.send(encode.err("Invalid Publish Subject"))  # and still published, as nats-server does
        if self.verbose:
            self.send(OK)
        self.router.publish(self, event.subject, event.reply, event.payload, event.headers)

    def _on_sub(self, event: Sub) -> None:
        if not subject.valid_subscribe_subject(event.subject) or (
            event.queue is not None and not subject.valid_queue_name(event.queue)
        ):
            self.send(encode.err("Invalid Subject"))
            return
        if event.sid in self.subs:
            if self.verbose:
                self.send(OK)
            return
        limit = self.router.settings.max_subscriptions
        if limit and len(self.subs) >= limit:
            self.send(encode.err("maximum subscriptions exceeded"))
            return
        sub = Subscription(self, event.subject, event.queue, event.sid)
        self.subs[event.sid] = sub
        error = self.router.subscribe(sub)
        if error is not None:
            del self.subs[event.sid]
            self.send(encode.err(error))
        elif self.verbose:
            self.send(OK)

    def _on_unsub(self, event: Unsub) -> None:
        sub = self.subs.get(event.sid)
        if sub is not None:
            if event.max_msgs and sub.delivered < event.max_msgs:
                sub.max_msgs = event.max_msgs
            else:
                self.remove_subscription(sub)
        if self.verbose:
            self.send(OK)

    def _on_violation(self, event: Violation) -> None:
        log.info("protocol violation cid=%d ip=%s: %s (%s)", self.cid, self.ip, event.text, event.detail)
        self.close(event.text, error=event.text if event.send_err else None)

    def may_create(self) -> bool:
        """Whether this connection is within its mailbox create rate (always, with no limit)."""
        rate = self.settings.max_creates_per_second
        if not rate:
            return True
        now = time.monotonic()
        if self._creates is None:
            self._creates = TokenBucket(rate, max(1.0, rate * 10), now)
        return self._creates.take(now)

    # -- output ------------------------------------------------------------------------------

    def deliver(self, sub: Subscription, subj: bytes, reply: bytes | None, payload: bytes, hdrs: bytes | None) -> None:
        """Send one message to one of this client's subscriptions, honouring its max."""
        if self.closed:
            return
        if hdrs is not None and self.headers:
            self.out.write(encode.hmsg(subj, sub.sid, reply, hdrs, payload))
        else:
            self.out.write(encode.msg(subj, sub.sid, reply, payload))
        self.out_msgs += 1
        self.out_bytes += len(payload)
        sub.delivered += 1
        if sub.max_msgs and sub.delivered >= sub.max_msgs:
            self.remove_subscription(sub)

    def remove_subscription(self, sub: Subscription) -> None:
        """Drop one subscription from this client and from the server's index."""
        if self.subs.pop(sub.sid, None) is sub:
            self.router.unsubscribe(sub)

    # -- keepalive and closing ---------------------------------------------------------------

    def _ping_early(self) -> bool:
        return not self.info_ready  # the first PING comes first_ping_delay after connect

    def _may_ping(self) -> bool:
        return self.connected or not self.router.auth.required  # no PING before an awaited CONNECT

    def _on_slow(self) -> None:
        self.router.slow_consumer(self)

    def _released(self, reason: str) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        for sub in list(self.subs.values()):
            self.router.unsubscribe(sub)
        self.subs.clear()
        self.router.client_closed(self, reason)
