"""Routes: core NATS between the nodes of a cluster, over a full mesh of route connections.

Each node listens on ``cluster_addr`` and keeps one route to every other node it knows of: the
configured ``routes`` and any it learns from a peer's INFO (implicit discovery, as nats-server
does), so a node given one seed joins the whole mesh. Over a route a node announces the
subjects its local clients subscribe to (RS+/RS-, refcounted here, resent in full on every new
route) and forwards each published message once to each peer with matching interest
(RMSG/RHMSG, naming the queue groups that peer must serve). A message that came over a route
goes to local subscriptions only, never further: in a full mesh one hop reaches every node,
so no subscription gets a message twice.

``$mq9.`` subjects are never routed (the server does not offer them): the mailbox layer
replicates them through Raft and delivers on every node. The wire format is described in
docs/architecture.md ("Routes"). Owns the route listener, the route connections, the index of
remote interest and the client URLs of the mesh; reaches the server only through
``LocalNode``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Collection
from typing import Protocol

from mq9cluster import __version__
from mq9cluster.config import Settings
from mq9cluster.protocol import encode
from mq9cluster.protocol.events import Err, Info, Ping, Pong, RouteMsg, RouteSub, RouteUnsub, Violation
from mq9cluster.protocol.parser import Parser
from mq9cluster.server.connection import Connection, rfc3339
from mq9cluster.server.sublist import Sublist

log = logging.getLogger("mq9cluster.routes")

ROUTE_PROTO = 1
"""Version of the route protocol, carried in the handshake INFO as ``route_proto``."""
HANDSHAKE_TIMEOUT = 5.0  # seconds a new route connection has to send its INFO
DIAL_TIMEOUT = 2.0
BACKOFF_MIN = 0.05  # seconds before redialing a route that dropped or refused, doubled per failure
BACKOFF_MAX = 2.0
LEARNED_GIVE_UP = 60.0  # a discovered (not configured) address unreachable this long is forgotten
MAX_ROUTE_PAYLOAD = 64 * 1048576  # the largest max_payload any node may have
MAX_ROUTE_CONTROL_LINE = 1048576  # an RMSG line names its queue groups: allow many
HANDSHAKE_EXPECTED = "Route Handshake Expected"
HANDSHAKE_TIMEOUT_ERR = "Route Handshake Timeout"
AUTH_VIOLATION = "Authorization Violation"
AUTH_LABEL = b"mq9cluster route auth v1"
PONG = encode.PONG_FRAME


def route_proof(password: str, dialer: bool, verifier_nonce: str, prover_nonce: str, prover_id: str) -> str:
    """HMAC-SHA256 (hex), keyed by the cluster password, that proves the prover knows it.

    It covers both nonces of the connection, the prover's side (dialer or accepter) and its
    server id, so a proof seen on one connection, or asked for in the other direction, does not
    pass on another.
    """
    message = b"\n".join([AUTH_LABEL, b"dial" if dialer else b"accept", verifier_nonce.encode(),
                          prover_nonce.encode(), prover_id.encode()])
    return hmac.new(password.encode(), message, hashlib.sha256).hexdigest()


class LocalNode(Protocol):
    """What the route layer needs from this node's server."""

    server_id: str
    connect_urls: list[str]

    @property
    def client_url(self) -> str: ...
    def deliver_routed(self, subject: bytes, reply: bytes | None, queues: Collection[bytes],
                       payload: bytes, hdrs: bytes | None) -> None: ...
    def set_connect_urls(self, urls: list[str]) -> None: ...


class RemoteInterest:
    """One subject (and queue group) a peer's clients subscribe to: an entry of the remote index."""

    __slots__ = ("route", "subject", "queue")

    def __init__(self, route: "Route", subject: bytes, queue: bytes | None) -> None:
        self.route = route
        self.subject = subject
        self.queue = queue


class Route(Connection):
    """One route connection to another node (dialed by this node, or accepted)."""

    def __init__(self, layer: "RouteLayer", rid: int, dial_addr: str | None) -> None:
        super().__init__(layer.settings, Parser(MAX_ROUTE_PAYLOAD, MAX_ROUTE_CONTROL_LINE, route=True))
        self.layer = layer
        self.rid = rid
        self.dial_addr = dial_addr  # the address this node dialed; None for an accepted route
        self.remote_id = ""
        self.remote_name = ""
        self.route_url = ""
        self.client_url = ""
        self.lame_duck = False
        self.registered = False
        self.interest: dict[tuple[bytes, bytes | None], RemoteInterest] = {}
        self.outcome: asyncio.Future[str] = self._loop.create_future()  # how the handshake ended
        self.gone: asyncio.Future[None] = self._loop.create_future()
        self._handshake_timer: asyncio.TimerHandle | None = None
        self.nonce = secrets.token_hex(16)  # the peer proves the cluster password over it (when set)
        self._peer_hello: dict | None = None  # the peer's first INFO, while its proof is awaited

    @property
    def name(self) -> str:
        """How logs name the peer."""
        return f"{self.remote_name or '?'} ({self.route_url or self.dial_addr or self.ip})"

    def settle(self, outcome: str) -> None:
        """Record how the handshake ended (for the dialer waiting on it)."""
        if not self.outcome.done():
            self.outcome.set_result(outcome)

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.send(self.layer.info_frame(self.nonce))
        self._handshake_timer = self._loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_late)

    def data_received(self, data: bytes) -> None:
        for event in self._received(data):
            if self.closed:
                return
            kind = type(event)
            if kind is RouteMsg and self.registered:
                self.in_msgs += 1
                self.in_bytes += len(event.payload)
                self.layer.local.deliver_routed(event.subject, event.reply, event.queues, event.payload,
                                                event.headers)
            elif kind is Violation:
                self.close(f"route protocol violation: {event.text} ({event.detail})", error=event.text)
            elif kind is Info:
                self._on_info(event.options)
            elif kind is Err:
                self.close(f"peer sent -ERR {event.text!r}")
            elif not self.registered:
                if self._peer_hello is not None:
                    self.close("no route password proof", error=AUTH_VIOLATION)
                else:
                    self.close("no route handshake", error=HANDSHAKE_EXPECTED)
            elif kind is RouteSub or kind is RouteUnsub:
                self.layer.remote_interest(self, event.subject, event.queue, kind is RouteSub)
            elif kind is Ping:
                self.send(PONG)
            elif kind is Pong:
                self.pings_out = 0
            # +OK is ignored.

    def _on_info(self, options: dict) -> None:
        if self.registered:
            self.layer.peer_info(self, options)
            return
        if self._peer_hello is not None:
            self._on_proof(options)
            return
        server_id, route_url = options.get("server_id"), options.get("route_url")
        if options.get("route_proto") != ROUTE_PROTO or not isinstance(server_id, str) or not server_id \
                or not isinstance(route_url, str) or not route_url:
            self.close("not a route handshake", error=HANDSHAKE_EXPECTED)
            return
        password = self.settings.cluster_password
        nonce = options.get("auth_nonce")
        if password:
            if not isinstance(nonce, str) or not nonce:
                log.warning("route from %s refused: it has no cluster password", self.ip)
                self.close("peer has no cluster password", error=AUTH_VIOLATION)
                return
            self._peer_hello = options
            self.send(encode.info({"auth_proof": route_proof(
                password, self.dial_addr is not None, nonce, self.nonce, self.layer.local.server_id)}))
            return
        if nonce:
            log.warning("route to %s not made: it asks for a cluster password and this node has none", self.ip)
            self.close("peer asks for a cluster password", error=AUTH_VIOLATION)
            return
        self._hello(options)

    def _on_proof(self, options: dict) -> None:
        """The second INFO of a handshake with a password: the peer's proof over our nonce."""
        hello = self._peer_hello
        assert hello is not None and self.settings.cluster_password
        proof = options.get("auth_proof")
        want = route_proof(self.settings.cluster_password, self.dial_addr is None, self.nonce,
                           hello["auth_nonce"], hello["server_id"])
        if not isinstance(proof, str) or not hmac.compare_digest(proof, want):
            log.warning("route from %s refused: wrong cluster password", self.ip)
            self.close("wrong route password proof", error=AUTH_VIOLATION)
            return
        self._peer_hello = None
        self._hello(hello)

    def _hello(self, options: dict) -> None:
        """A peer's handshake INFO, authenticated when there is a password: register the route."""
        server_id, route_url = options["server_id"], options["route_url"]
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.remote_id = server_id
        self.remote_name = str(options.get("server_name") or "")
        self.route_url = route_url
        self.peer_state(options)
        self.layer.handshake(self, options)

    def peer_state(self, options: dict) -> None:
        """The parts of a peer's INFO that may change: its client URL and lame duck mode."""
        client_url = options.get("client_url")
        if isinstance(client_url, str):
            self.client_url = client_url
        self.lame_duck = bool(options.get("ldm", False))

    def _handshake_late(self) -> None:
        self._handshake_timer = None
        if not self.registered and not self.closed:
            self.close("route handshake timeout", error=HANDSHAKE_TIMEOUT_ERR)

    # -- output ------------------------------------------------------------------------------

    def forward(self, subject: bytes, reply: bytes | None, queues: list[bytes], payload: bytes,
                hdrs: bytes | None) -> None:
        """Send one published message to the peer, naming the queue groups it must serve."""
        if self.closed:
            return
        if hdrs is None:
            self.out.write(encode.rmsg(subject, reply, queues, payload))
        else:
            self.out.write(encode.rhmsg(subject, reply, queues, hdrs, payload))
        self.out_msgs += 1
        self.out_bytes += len(payload)

    # -- closing -----------------------------------------------------------------------------

    def _on_slow(self) -> None:
        log.warning("route to %s cut: the peer does not read fast enough (pending %d bytes)",
                    self.name, self.out.pending())

    def _released(self, reason: str) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.layer.route_closed(self, reason)
        self.settle("closed")
        if not self.gone.done():
            self.gone.set_result(None)


class RouteLayer:
    """This node's side of the mesh: listener, dialers, interest out and in, forwarding."""

    def __init__(self, settings: Settings, local: LocalNode) -> None:
        self.settings = settings
        self.local = local
        self.url = ""  # this node's advertised route address
        self.routes: dict[str, Route] = {}  # registered routes by the peer's server id
        self.index: Sublist[RemoteInterest] = Sublist()
        self.local_interest: dict[tuple[bytes, bytes | None], int] = {}
        self.known: dict[str, bool] = {}  # route addresses kept connected -> configured (not learned)
        self.aliases: dict[str, str] = {}  # a dialed address -> the server id it reached
        self.lame_duck = False
        self._closing = False
        self._self_addrs: set[str] = set()
        self._dialers: dict[str, asyncio.Task] = {}
        self._listener: asyncio.base_events.Server | None = None
        self._next_rid = 0
        self._random = random.Random()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the route listener, then dial the configured routes (and keep them connected)."""
        host, port = self.settings.cluster_listen
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            lambda: self._new_route(None), host, port, reuse_address=True, backlog=128,
        )
        self.url = self.settings.route_url()
        self._self_addrs = {self.settings.cluster_addr, self.url}
        self._update_connect_urls()
        log.info("listening for routes on %s (advertised as %s)", self.settings.cluster_addr, self.url)
        for addr in self.settings.other_routes:
            self._learn(addr, configured=True)

    def close(self) -> None:
        """Stop dialing and accepting; close every route."""
        self._closing = True
        if self._listener is not None:
            self._listener.close()
        for task in self._dialers.values():
            task.cancel()
        self._dialers.clear()
        for route in list(self.routes.values()):
            route.close("server shutdown")

    def enter_lame_duck(self) -> None:
        """Tell the peers this node is leaving, so they stop offering its URL to clients."""
        self.lame_duck = True
        frame = self.info_frame()
        for route in self.routes.values():
            route.send(frame)

    def _new_route(self, dial_addr: str | None) -> Route:
        self._next_rid += 1
        return Route(self, self._next_rid, dial_addr)

    def info_frame(self, nonce: str = "") -> bytes:
        """This node's route INFO: who it is, where clients and routes reach it, whom it knows.

        The first INFO on a connection of a node with a cluster password carries ``auth_nonce``.
        """
        extra = {"auth_nonce": nonce} if nonce and self.settings.cluster_password else {}
        return encode.info({
            "server_id": self.local.server_id,
            "server_name": self.settings.server_name,
            "version": __version__,
            "route_proto": ROUTE_PROTO,
            "route_url": self.url,
            "client_url": self.local.client_url,
            "routes": sorted(route.route_url for route in self.routes.values()),
            "ldm": self.lame_duck,
            **extra,
        })

    # -- keeping the mesh --------------------------------------------------------------------

    def _learn(self, addr: str, configured: bool) -> None:
        """Keep a route to ``addr`` from now on (unless it is this node or already kept)."""
        if self._closing or not addr or addr in self._self_addrs or addr in self.known:
            return
        self.known[addr] = configured
        self._dialers[addr] = asyncio.get_running_loop().create_task(self._keep(addr))

    def _learn_from(self, options: dict) -> None:
        """Keep routes to the nodes a peer's INFO says it is connected to (implicit discovery)."""
        routes = options.get("routes")
        for addr in routes if isinstance(routes, list) else ():
            if isinstance(addr, str):
                self._learn(addr, configured=False)

    def _route_at(self, addr: str) -> Route | None:
        """The registered route to the node at ``addr``, if any."""
        route = self.routes.get(self.aliases.get(addr, ""))
        if route is not None:
            return route
        return next((route for route in self.routes.values() if route.route_url == addr), None)

    async def _keep(self, addr: str) -> None:
        """Dial ``addr`` whenever no route to its node is up; back off while it fails."""
        delay = BACKOFF_MIN
        last_up = time.monotonic()
        failures = 0
        while True:
            route = self._route_at(addr)
            if route is None:
                outcome = await self._dial(addr)
                if outcome == "self":
                    self._forget(addr)
                    self._self_addrs.add(addr)
                    return
                route = self._route_at(addr)
                if route is None:
                    failures += 1
                    (log.info if failures == 1 else log.debug)("route to %s not up (%s), attempt %d",
                                                                addr, outcome, failures)
                    if not self.known.get(addr) and time.monotonic() - last_up > LEARNED_GIVE_UP:
                        log.info("forgetting discovered route %s: unreachable for %.0f s", addr, LEARNED_GIVE_UP)
                        self._forget(addr)
                        return
                    await self._backoff(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
            up = time.monotonic()
            await asyncio.wait({route.gone})
            last_up, failures = time.monotonic(), 0
            if last_up - up < 1.0:  # a route that keeps dropping at once is not redialed in a loop
                await self._backoff(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            else:
                delay = BACKOFF_MIN

    async def _backoff(self, delay: float) -> None:
        await asyncio.sleep(delay * (0.5 + self._random.random()))

    def _forget(self, addr: str) -> None:
        self.known.pop(addr, None)
        self._dialers.pop(addr, None)

    async def _dial(self, addr: str) -> str:
        """Connect to ``addr`` and wait for the handshake: its outcome, or why it failed."""
        host, _, port = addr.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            _, route = await asyncio.wait_for(
                loop.create_connection(lambda: self._new_route(addr), host.strip("[]"), int(port)),
                DIAL_TIMEOUT,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            return f"cannot connect: {exc or 'timeout'}"
        return await route.outcome

    def handshake(self, route: Route, options: dict) -> None:
        """A route sent a valid INFO: register it, or close it as a loop to self or a duplicate."""
        rid = route.remote_id
        if self._closing:
            route.close("server shutdown")
            return
        if rid == self.local.server_id:
            route.settle("self")
            route.close("route to self")
            return
        if route.dial_addr is not None:
            self.aliases[route.dial_addr] = rid
        existing = self.routes.get(rid)
        if existing is not None:
            # Both ends keep the same connection of a pair: the one dialed by the smaller id.
            if not self._preferred(route) or self._preferred(existing):
                route.settle("duplicate")
                route.close("duplicate route")
                return
            self._unregister(existing, "replaced by a duplicate route")
            existing.close("duplicate route")
        self._register(route, replacing=existing is not None)
        self._learn_from(options)

    def _preferred(self, route: Route) -> bool:
        return (route.dial_addr is not None) == (self.local.server_id < route.remote_id)

    def _register(self, route: Route, replacing: bool) -> None:
        route.registered = True
        self.routes[route.remote_id] = route
        (log.debug if replacing else log.info)(
            "route up: %s, %s", route.name, "dialed" if route.dial_addr else "accepted")
        if self.local_interest:
            route.send(b"".join(encode.route_interest(True, subject, queue)
                                for subject, queue in self.local_interest))
        route.settle("registered")
        self._learn(route.route_url, configured=False)
        if not replacing:
            frame = self.info_frame()  # the others learn of the new node (implicit discovery)
            for other in self.routes.values():
                if other is not route:
                    other.send(frame)
            self._update_connect_urls()

    def _unregister(self, route: Route, reason: str) -> None:
        route.registered = False
        if self.routes.get(route.remote_id) is route:
            del self.routes[route.remote_id]
        for entry in route.interest.values():
            self.index.remove(entry)
        route.interest.clear()
        log.debug("route to %s unregistered: %s", route.name, reason)

    def route_closed(self, route: Route, reason: str) -> None:
        """A route connection went away."""
        if not route.registered:
            log.debug("route connection %s closed before registering: %s", route.name, reason)
            return
        self._unregister(route, reason)
        log.info("route down: %s: %s", route.name, reason)
        self._update_connect_urls()

    def peer_info(self, route: Route, options: dict) -> None:
        """An INFO on a registered route: routes it knows, its client URL, lame duck."""
        route.peer_state(options)
        self._learn_from(options)
        self._update_connect_urls()

    def _update_connect_urls(self) -> None:
        """Give clients the client URLs of the mesh (this node first) when the set changes."""
        if self._closing:
            return  # clients are about to be closed too: no INFO that only says this node is left
        urls = [self.local.client_url]
        for route in sorted(self.routes.values(), key=lambda r: r.client_url):
            if route.client_url and not route.lame_duck and route.client_url not in urls:
                urls.append(route.client_url)
        if urls != self.local.connect_urls:
            self.local.set_connect_urls(urls)

    # -- interest ----------------------------------------------------------------------------

    def interest(self, subject: bytes, queue: bytes | None, delta: int) -> None:
        """A local subscription came (+1) or went (-1): tell the peers on the first and the last."""
        key = (subject, queue)
        count = self.local_interest.get(key, 0) + delta
        if count > 0:
            self.local_interest[key] = count
        else:
            self.local_interest.pop(key, None)
        if (delta > 0 and count == 1) or (delta < 0 and count == 0):
            frame = encode.route_interest(delta > 0, subject, queue)
            for route in self.routes.values():
                route.send(frame)

    def remote_interest(self, route: Route, subject: bytes, queue: bytes | None, added: bool) -> None:
        """RS+/RS- from a peer: keep the remote index current."""
        key = (subject, queue)
        if not added:
            entry = route.interest.pop(key, None)
            if entry is not None:
                self.index.remove(entry)
            return
        if key in route.interest:
            return
        entry = RemoteInterest(route, subject, queue)
        try:
            self.index.insert(entry)
        except ValueError:
            route.close(f"invalid subject in RS+ {subject!r}", error="Invalid Subject")
            return
        route.interest[key] = entry

    # -- forwarding --------------------------------------------------------------------------

    def forward(self, subject: bytes, reply: bytes | None, payload: bytes, hdrs: bytes | None,
                served: Collection[bytes]) -> int:
        """Send a local publish once to each peer with interest; how many peers got it.

        A queue group already served by a local member (``served``) is not offered to peers;
        any other group goes to one peer that has members of it, chosen at random.
        """
        result = self.index.match(subject)
        if not result:
            return 0
        targets: dict[Route, list[bytes]] = {}
        for entry in result.plain:
            if entry.route not in targets:
                targets[entry.route] = []
        for group in result.queues:
            name = group[0].queue
            if name in served:
                continue
            routes = list(dict.fromkeys(entry.route for entry in group))
            route = routes[0] if len(routes) == 1 else self._random.choice(routes)
            targets.setdefault(route, []).append(name)
        for route, queues in targets.items():
            route.forward(subject, reply, queues, payload, hdrs)
        return len(targets)

    # -- monitoring --------------------------------------------------------------------------

    def routez(self, subs: bool = False) -> dict:
        """Routes in the shape of nats-server's /routez."""
        now = time.time()
        entries = []
        for route in sorted(self.routes.values(), key=lambda r: r.rid):
            entry = {
                "rid": route.rid, "remote_id": route.remote_id, "remote_name": route.remote_name,
                "did_solicit": route.dial_addr is not None,
                "is_configured": bool(self.known.get(route.dial_addr or route.route_url)),
                "route_url": route.route_url, "client_url": route.client_url, "lame_duck": route.lame_duck,
                **route.monitor_fields(now),
                "pending_size": route.out.pending() if route.out else 0,
                "subscriptions": len(route.interest),
            }
            if subs:
                entry["subscriptions_list"] = sorted(
                    (subject + b" " + queue if queue else subject).decode(errors="replace")
                    for subject, queue in route.interest)
            entries.append(entry)
        return {
            "server_id": self.local.server_id, "now": rfc3339(now), "route_url": self.url,
            "num_routes": len(entries), "routes": entries,
        }

    def varz(self) -> dict:
        """The route part of /varz."""
        host, port = self.settings.cluster_listen if self.settings.cluster_addr else ("", 0)
        return {
            "routes": len(self.routes),
            "cluster": {"addr": host, "cluster_port": port, "route_url": self.url,
                        "urls": list(self.known)},
        }
