"""The NATS front end: listener, client registry, subject routing, lifecycle.

Owns the subject index and decides who receives each published message. It knows nothing of
mailboxes beyond the ``MailboxGateway`` interface that later layers plug in; it does not parse
bytes (the protocol package does) and does not read the environment (Settings are passed in).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import secrets
import time
from collections.abc import Collection, Iterable
from typing import Protocol

from mq9cluster import __version__
from mq9cluster.config import Settings
from mq9cluster.errors import PermissionDenied
from mq9cluster.protocol import encode, headers
from mq9cluster.server.auth import Authenticator
from mq9cluster.server.tls import client_tls_context
from mq9cluster.server.client import Client, Subscription
from mq9cluster.server.connection import rfc3339
from mq9cluster.server.sublist import Sublist

log = logging.getLogger("mq9cluster.server")

#: The NATS server version we present: clients enable features (headers, no-responders) by it.
NATS_COMPAT_VERSION = "2.10.0"


MQ9_PREFIX = b"$mq9."
#: The one mq9 request a connection's rate of is limited here (--max-creates-per-second).
MQ9_CREATE = b"$mq9.AI.MAILBOX.CREATE"


class MailboxGateway(Protocol):
    """What the server needs from the mailbox layer for ``$mq9.`` subjects."""

    def publish(self, subject: bytes, reply: bytes | None, payload: bytes, headers: bytes | None) -> None: ...
    def subscribe(self, sub: Subscription) -> bool:
        """True if the mailbox layer delivers ``sub``, False for plain NATS; PermissionDenied to refuse."""
    def unsubscribe(self, sub: Subscription) -> None: ...


class Peers(Protocol):
    """What the server needs from the route layer (routes.py): interest out, messages out."""

    def interest(self, subject: bytes, queue: bytes | None, delta: int) -> None:
        """A local plain-NATS subscription came (+1) or went (-1)."""
    def forward(self, subject: bytes, reply: bytes | None, payload: bytes, hdrs: bytes | None,
                served: Collection[bytes]) -> int:
        """Send a local publish to the peers with interest (queue groups in ``served`` had a local
        member); how many peers got it."""
    def enter_lame_duck(self) -> None: ...
    def varz(self) -> dict: ...


def new_server_id() -> str:
    """A 56-character upper-case id shaped like nats-server's (an N-prefixed base32 string)."""
    return "N" + base64.b32encode(secrets.token_bytes(35)).decode()[:55]


class Stats:
    """Server-wide message and connection counters (the /varz numbers)."""

    __slots__ = ("in_msgs", "in_bytes", "out_msgs", "out_bytes", "total_connections", "slow_consumers",
                 "auth_failures")

    def __init__(self) -> None:
        self.in_msgs = self.in_bytes = self.out_msgs = self.out_bytes = 0
        self.total_connections = 0
        self.slow_consumers = 0
        self.auth_failures = 0


class Server:
    """One broker node's client-facing NATS server."""

    def __init__(self, settings: Settings, gateway: MailboxGateway | None = None) -> None:
        self.settings = settings
        self.gateway = gateway
        self.auth = Authenticator.from_settings(settings)
        self.tls_context = client_tls_context(settings)
        self.peers: Peers | None = None  # the route layer, when this node is in a cluster
        self.server_id = new_server_id()
        self.sublist = Sublist()
        self.clients: dict[int, Client] = {}
        self.stats = Stats()
        self.started = time.time()
        self.connect_urls: list[str] = []
        self.lame_duck = False
        self.stopped = asyncio.Event()
        self._next_cid = 0
        self._listener: asyncio.base_events.Server | None = None
        self._shutting_down = False
        self._port = 0
        self._info_base: dict = {}
        self._random = random.Random()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the client port (address reuse on, so a restart can bind at once)."""
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(
            self._new_client, self.settings.host, self.settings.port,
            reuse_address=True, backlog=1024,
        )
        if self._shutting_down:  # shutdown() began while binding and found no listener to close
            listener.close()
            return
        self._listener = listener
        self._port = self._listener.sockets[0].getsockname()[1]
        self._info_base = {
            "server_id": self.server_id,
            "server_name": self.settings.server_name,
            "version": NATS_COMPAT_VERSION,
            "proto": 1,
            "go": f"mq9cluster {__version__}",
            "host": self.settings.host,
            "port": self.port,
            "headers": True,
            "max_payload": self.settings.max_payload,
        }
        if self.auth.required:
            self._info_base["auth_required"] = True
        if self.settings.client_tls:
            self._info_base["tls_required"] = True
            if self.settings.tls_verify:
                self._info_base["tls_verify"] = True
        log.info("listening for client connections on %s:%d", self.settings.host, self.port)

    @property
    def port(self) -> int:
        """The bound client port (differs from the setting when that is 0); kept after the listener
        closes (lame duck), when /varz and the client URL still need it."""
        return self._port

    async def shutdown(self) -> None:
        """Stop accepting, flush and close every client, and mark the server stopped."""
        self._shutting_down = True
        if self._listener is not None:
            self._listener.close()
        for client in list(self.clients.values()):
            client.close("server shutdown")
        await asyncio.sleep(0)  # let transports hand their last bytes to the kernel
        self.stopped.set()
        log.info("server stopped")

    async def enter_lame_duck(self) -> None:
        """SIGUSR2: stop listening, tell clients where else to go, then close them gradually."""
        if self.lame_duck:
            return
        self.lame_duck = True
        if self._listener is not None:
            self._listener.close()
        if self.peers is not None:
            self.peers.enter_lame_duck()
        others = [url for url in self.connect_urls if url != self.client_url]
        notice = encode.info({**self._info_base, "ldm": True, "connect_urls": others})
        for client in self.clients.values():
            if client.protocol >= 1 and client.info_ready:
                client.send(notice)
        log.info("entering lame duck mode, %d clients to close", len(self.clients))
        await asyncio.sleep(self.settings.lame_duck_grace)
        victims = list(self.clients.values())
        spread = max(self.settings.lame_duck_duration - self.settings.lame_duck_grace, 0.0)
        pause = spread / len(victims) if victims else 0.0
        for client in victims:
            client.close("lame duck mode")
            await asyncio.sleep(min(pause, 1.0))
        await self.shutdown()

    @property
    def client_url(self) -> str:
        """This node's ``host:port`` as other nodes and clients reach it."""
        return self.settings.client_url(self.port)

    def set_connect_urls(self, urls: Iterable[str]) -> None:
        """New cluster membership: remember the URLs and tell clients that can take async INFO."""
        self.connect_urls = list(urls)
        notice = encode.info({**self._info_base, "connect_urls": self.connect_urls})
        for client in self.clients.values():
            if client.protocol >= 1 and client.info_ready:
                client.send(notice)

    # -- connections -------------------------------------------------------------------------

    def _new_client(self) -> Client:
        self._next_cid += 1
        client = Client(self, self._next_cid)
        return client

    def info_for(self, client: Client) -> bytes:
        """The INFO line a new connection gets first; registers it or refuses it when full."""
        if len(self.clients) >= self.settings.max_connections:
            loop = asyncio.get_running_loop()
            loop.call_soon(client.close, "maximum connections exceeded", "maximum connections exceeded")
        else:
            self.clients[client.cid] = client
            self.stats.total_connections += 1
        info = {**self._info_base, "client_id": client.cid, "client_ip": client.ip}
        if self.connect_urls:
            info["connect_urls"] = self.connect_urls
        if self.lame_duck:
            info["ldm"] = True
        return encode.info(info)

    def client_closed(self, client: Client, reason: str) -> None:
        """Forget a closed connection."""
        self.clients.pop(client.cid, None)
        log.debug("client closed cid=%d ip=%s reason=%s", client.cid, client.ip, reason)

    def auth_failed(self, client: Client, why: str) -> None:
        """Count and log a client refused for its credentials (never the credentials themselves)."""
        self.stats.auth_failures += 1
        log.warning("authorization violation cid=%d ip=%s name=%r: %s", client.cid, client.ip, client.name, why)

    def slow_consumer(self, client: Client) -> None:
        """Count and log a client cut for not reading fast enough."""
        self.stats.slow_consumers += 1
        log.warning("slow consumer cut cid=%d ip=%s pending=%d", client.cid, client.ip, client.out.pending())

    # -- routing -----------------------------------------------------------------------------

    def subscribe(self, sub: Subscription) -> str | None:
        """Index a new subscription (or hand a ``$mq9.`` one to the mailbox layer); an -ERR text if refused."""
        if self.gateway is not None and sub.subject.startswith(MQ9_PREFIX):
            try:
                sub.mailbox = self.gateway.subscribe(sub)
            except PermissionDenied as exc:
                return str(exc)
            if sub.mailbox:
                return None
        self.sublist.insert(sub)
        if self.peers is not None and not sub.subject.startswith(MQ9_PREFIX):
            self.peers.interest(sub.subject, sub.queue, 1)
        return None

    def unsubscribe(self, sub: Subscription) -> None:
        """Drop a subscription from the index (or from the mailbox layer)."""
        if sub.mailbox:
            self.gateway.unsubscribe(sub)
        elif self.sublist.remove(sub) and self.peers is not None and not sub.subject.startswith(MQ9_PREFIX):
            self.peers.interest(sub.subject, sub.queue, -1)

    def reply(self, subject: bytes, payload: bytes) -> None:
        """Publish a message the broker itself originates (mailbox replies) as plain NATS."""
        self._route(subject, None, payload, None, None)

    def publish(self, origin: Client, subj: bytes, reply: bytes | None, payload: bytes, hdrs: bytes | None) -> None:
        """Deliver to every matching plain subscription and to one member of each queue group."""
        stats = self.stats
        stats.in_msgs += 1
        stats.in_bytes += len(payload)
        if self.gateway is not None and subj.startswith(MQ9_PREFIX):
            if subj == MQ9_CREATE and not origin.may_create():
                log.info("mailbox create refused cid=%d ip=%s: over the create rate", origin.cid, origin.ip)
                if reply is not None:
                    self.reply(reply, b'{"error": "too many mailbox creates from this connection, slow down"}')
                return
            self.gateway.publish(subj, reply, payload, hdrs)
            return
        delivered = self._route(subj, reply, payload, hdrs, None if origin.echo else origin)
        if not delivered and reply is not None and origin.no_responders:
            self._no_responders(origin, reply)

    def _route(self, subj: bytes, reply: bytes | None, payload: bytes, hdrs: bytes | None,
               skip: Client | None, routed: Collection[bytes] | None = None) -> int:
        """Deliver to every plain subscription (passing over ``skip``'s) and one member of each
        queue group, then to the peers with interest; how many subscriptions and peers got it.

        ``routed`` is given for a message a peer forwarded: only those queue groups are served
        here, and the message goes no further. ``$mq9.`` subjects stay on this node.
        """
        result = self.sublist.match(subj)
        delivered = 0
        for sub in result.plain:
            if sub.client is not skip:
                sub.client.deliver(sub, subj, reply, payload, hdrs)
                delivered += 1
        served: list[bytes] | None = None
        for group in result.queues:
            if routed is not None and group[0].queue not in routed:
                continue
            members = [s for s in group if not s.client.closed and s.client is not skip]
            if members:
                sub = members[0] if len(members) == 1 else self._random.choice(members)
                sub.client.deliver(sub, subj, reply, payload, hdrs)
                delivered += 1
                if self.peers is not None:  # the peers are not offered a group served here
                    if served is None:
                        served = []
                    served.append(sub.queue)
        if delivered:
            self.stats.out_msgs += delivered
            self.stats.out_bytes += delivered * len(payload)
        if routed is None and self.peers is not None and not subj.startswith(MQ9_PREFIX):
            delivered += self.peers.forward(subj, reply, payload, hdrs, served or ())
        return delivered

    def deliver_routed(self, subj: bytes, reply: bytes | None, queues: Collection[bytes], payload: bytes,
                       hdrs: bytes | None) -> None:
        """A message a peer node forwarded: to this node's plain subscriptions and to one member of
        each of the named queue groups; never forwarded again."""
        self._route(subj, reply, payload, hdrs, None, queues)

    def _no_responders(self, origin: Client, reply: bytes) -> None:
        """Send the 503 status to the requester through its own plain subscription on ``reply``."""
        for sub in self.sublist.match(reply).plain:
            if sub.client is origin:
                origin.deliver(sub, reply, None, b"", headers.NO_RESPONDERS)
                return

    # -- introspection for monitoring --------------------------------------------------------

    def varz(self) -> dict:
        """Server information in the shape of nats-server's /varz."""
        s, st = self.settings, self.stats
        now = time.time()
        return {
            "server_id": self.server_id,
            "server_name": s.server_name,
            "version": NATS_COMPAT_VERSION,
            "mq9cluster_version": __version__,
            "proto": 1,
            "host": s.host,
            "port": self.port,
            "http_port": s.http_port,
            "max_connections": s.max_connections,
            "max_subscriptions": s.max_subscriptions,
            "max_payload": s.max_payload,
            "max_pending": s.max_pending,
            "max_control_line": s.max_control_line,
            "ping_interval": int(s.ping_interval * 1e9),
            "ping_max": s.ping_max,
            "write_deadline": int(s.write_deadline * 1e9),
            "start": rfc3339(self.started),
            "now": rfc3339(now),
            "uptime": f"{int(now - self.started)}s",
            "connections": len(self.clients),
            "total_connections": st.total_connections,
            "subscriptions": len(self.sublist),
            "in_msgs": st.in_msgs,
            "out_msgs": st.out_msgs,
            "in_bytes": st.in_bytes,
            "out_bytes": st.out_bytes,
            "slow_consumers": st.slow_consumers,
            "auth_failures": st.auth_failures,
            "auth_required": self.auth.required,
            "tls_required": s.client_tls,
            "cores": os.cpu_count(),
            "connect_urls": self.connect_urls,
            "lame_duck_mode": self.lame_duck,
            **(self.peers.varz() if self.peers is not None else {"routes": 0}),
        }

    def connz(self, subs: bool = False, offset: int = 0, limit: int = 1024) -> dict:
        """Connections in the shape of nats-server's /connz."""
        now = time.time()
        clients = sorted(self.clients.values(), key=lambda c: c.cid)
        page = clients[offset:offset + limit]
        conns = []
        for c in page:
            entry = {
                "cid": c.cid, **c.monitor_fields(now),
                "pending_bytes": c.out.pending() if c.out else 0,
                "subscriptions": len(c.subs),
                "name": c.name, "lang": c.lang, "version": c.version,
            }
            if c.user:
                entry["authorized_user"] = c.user  # nats-server's name for it
            if subs:
                entry["subscriptions_list"] = [s.subject.decode(errors="replace") for s in c.subs.values()]
            conns.append(entry)
        return {
            "server_id": self.server_id, "now": rfc3339(now),
            "num_connections": len(conns), "total": len(clients),
            "offset": offset, "limit": limit, "connections": conns,
        }
