"""Composition root: builds store -> cluster -> mailbox -> server from Settings and runs them on uvloop."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import math
import signal
import threading
import time
from collections.abc import Coroutine
from typing import Any, BinaryIO

import uvloop

from mq9cluster import __version__, logs, metrics
from mq9cluster.cluster.groupcommit import GroupCommitter, decode_batch
from mq9cluster.cluster.raft import RaftNode, RaftTuning
from mq9cluster.config import Settings
from mq9cluster.cluster import admin, rebuild
from mq9cluster.cluster.rebuild import RebuildState
from mq9cluster.errors import ClusterAdminError, ConfigError, DataDamaged, Mq9Error, StoreCorrupt
from mq9cluster.mailbox.machine import Change, Created, MailboxMachine, Removed
from mq9cluster.mailbox import skew
from mq9cluster.mailbox.pull_service import now_ms
from mq9cluster.mailbox.service import MailboxService
from mq9cluster.server.monitor import Monitor
from mq9cluster.server.routes import RouteLayer
from mq9cluster.server.server import Server
from mq9cluster.store import Store

TICK_INTERVAL = 0.05  # seconds between checks for due delayed messages and ended message TTLs
REJOIN_WAIT = 60.0  # seconds a rebuilding node keeps asking its peers for their members
log = logging.getLogger("mq9cluster.app")


def prepare_data_dir(settings: Settings) -> None:
    """Create the data directory, or say clearly why it cannot be used."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"data dir {settings.data_dir}: {exc.strerror}") from None
    probe = settings.data_dir / ".write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"data dir {settings.data_dir} is not writable: {exc.strerror}") from None


class Node:
    """One broker node's parts, wired: store, Raft, mailbox service, NATS server, monitoring."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        # set before Raft starts: its first tick may find a damaged snapshot (_raft_failed) at once
        self.failure: Mq9Error | None = None
        self.store = Store.open(settings.data_dir / "store")
        try:
            self.machine = MailboxMachine(self.store, self._changes_from_raft)  # reads the store
            self.raft = RaftNode(
                settings.raft_addr, settings.other_peers, str(settings.data_dir),
                self._apply_entry, self.machine.last_applied, on_fatal=self._raft_failed,
                snapshot_writer=self.store.snapshot, snapshot_reader=self._install_snapshot,
                tuning=RaftTuning(snapshot_min_entries=settings.raft_snapshot_entries),
                password=settings.cluster_password,
            )
        except OSError as exc:
            self.store.close()
            raise ConfigError(f"cannot start Raft on {settings.raft_addr}: {exc}") from None
        except BaseException:  # damaged data: the store must be closed before it is moved aside
            self.store.close()
            raise
        self.committer = GroupCommitter(
            self.raft, max_ops=settings.commit_max_ops, max_wait=settings.commit_max_wait,
            max_in_flight=settings.commit_max_in_flight,
        )
        self.mailboxes = MailboxService(
            self.store, self.committer, self.raft.read_barrier, self._is_leader, settings.mailbox_max_ttl,
            replay_window=min(4 * 1048576, settings.max_pending // 4),
            max_mailbox_bytes=settings.mailbox_max_bytes, max_mailboxes=settings.max_mailboxes,
            max_total_bytes=settings.max_stored_bytes,
        )
        self.server = Server(settings, gateway=self.mailboxes)
        self.mailboxes.reply = self.server.reply
        self.routes = RouteLayer(settings, self.server)
        if settings.cluster_addr:
            self.server.peers = self.routes
        self.monitor = Monitor(self.server) if settings.http_port else None
        self.rebuilding: RebuildState | None = None  # set while this node rebuilds itself from its peers
        if self.monitor is not None:
            plain_health = self.monitor.routes["/healthz"]
            self.monitor.routes["/healthz"] = lambda query: (
                plain_health(query) if self.rebuilding is None else (503, self.rebuilding.health()))
            self.monitor.routes["/raftz"] = lambda query: (200, self.raft_status())
            self.monitor.routes["/routez"] = lambda query: (
                200, self.routes.routez(subs=Monitor.flag(query, "subs")))
            self.monitor.routes["/readyz"] = lambda query: self.readiness()
            self.monitor.metrics = metrics.node_registry(self.metrics_snapshot)
        self._tasks: set[asyncio.Task] = set()
        self.joining_through: list[str] | None = None  # the seeds, while `join` has not been committed

    def _apply_entry(self, index: int, entry: bytes) -> Any:
        """Raft thread: one committed batch entry onto the store."""
        proposal_id, raw_ops = decode_batch(entry)
        return self.machine.apply_batch(index, raw_ops, proposal_id)

    def _install_snapshot(self, state: BinaryIO) -> None:
        """Raft thread: replace the store by a snapshot newer than it (this node fell behind a
        compacted log, is new, or lost its store), then let delivery catch up with it.

        The loop is told after the swap, before any later entry's changes (both go through
        ``call_soon_threadsafe`` from this thread, in order): subscriptions replay again from
        their cursors, and PUBLIC.LIST watchers hear of public mailboxes that came or went
        (as ``deleted``: whether one expired is not known any more).
        """
        before = {mailbox.address: mailbox for mailbox in self.store.public_mailboxes()}
        self.store.install(state)
        self.machine.recount()
        after = {mailbox.address: mailbox for mailbox in self.store.public_mailboxes()}
        changes: list[Change] = [Created(m) for address, m in after.items() if address not in before]
        changes += [Removed(m, "deleted") for address, m in before.items() if address not in after]
        self.loop.call_soon_threadsafe(self._store_replaced, changes)

    def _store_replaced(self, changes: list[Change]) -> None:
        """Loop: the store was replaced by a snapshot install."""
        self.mailboxes.delivery.resync()
        self.mailboxes.delivery.apply_changes(changes)

    def _changes_from_raft(self, changes: list[Change]) -> None:
        """Raft thread: hand applied changes to the loop, in log order.

        The Raft thread starts applying as soon as ``RaftNode`` exists (a store behind the
        journal, as after a power loss, is caught up at once), before ``self.mailboxes`` does:
        the service is looked up on the loop, which runs nothing until ``__init__`` is done.
        """
        self.loop.call_soon_threadsafe(self._deliver_changes, changes)

    def _deliver_changes(self, changes: list[Change]) -> None:
        self.mailboxes.delivery.apply_changes(changes)

    def _raft_failed(self, error: BaseException) -> None:
        log.critical("raft stopped on an error, shutting the node down: %r", error)
        if rebuild.is_damage(error):  # serve() rebuilds the node or refuses, as at start
            self.failure = error if isinstance(error, Mq9Error) else StoreCorrupt(str(error))
        self.loop.call_soon_threadsafe(self.spawn, self.shutdown())

    def raft_status(self) -> dict[str, Any]:
        """This node's Raft view as JSON-ready data (``/raftz``)."""
        status = dataclasses.asdict(self.raft.status())
        status["node_id"] = self.settings.node_name
        status["clock"] = skew.clock_view(self.machine.clock, self.settings.raft_addr, now_ms())
        return status

    def _skew_ms(self) -> int | None:
        """This node's clock minus the cluster clock, from its latest applied report (mailbox/skew.py)."""
        return skew.skew_ms(self.machine.clock, self.settings.raft_addr)

    def metrics_snapshot(self) -> dict[str, float]:
        """The numbers ``/metrics`` reads at scrape time (names from metrics.SNAPSHOT_METRICS)."""
        stats, raft, totals = self.server.stats, self.raft.status(), self.machine.totals
        clock, skew_ms = self.machine.clock, self._skew_ms()
        values = {
            "messages_in": stats.in_msgs, "messages_out": stats.out_msgs,
            "bytes_in": stats.in_bytes, "bytes_out": stats.out_bytes,
            "connections": len(self.server.clients), "connections_accepted": stats.total_connections,
            "subscriptions": len(self.server.sublist), "slow_consumers": stats.slow_consumers,
            "auth_failures": stats.auth_failures,
            "raft_term": raft.term, "raft_is_leader": int(raft.role == "leader"),
            "raft_commit_index": raft.commit_index, "raft_applied_index": raft.last_applied,
            "raft_apply_lag": max(raft.commit_index - raft.last_applied, 0),
            "raft_proposals": self.committer.entries_proposed, "raft_proposal_retries": self.committer.retries,
            "raft_peers_connected": sum(raft.peers.values()),
            "mailboxes": totals.mailboxes, "stored_messages": totals.messages, "stored_bytes": totals.bytes,
            "cluster_clock_ms": clock.now,
        }
        if skew_ms is not None:
            values["clock_skew_seconds"] = skew_ms / 1000
        return values

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """``/readyz``: 200 once this node is a member that knows a leader and applied what it knows
        is committed; 503 with the reason otherwise (a Kubernetes readiness probe)."""
        status = self.raft.status()
        reason = status.not_ready_reason()
        if self.rebuilding is not None:
            reason = f"rebuilding from peers ({self.rebuilding.phase})"
        elif self.joining_through is not None:
            reason = f"joining the cluster through {', '.join(self.joining_through)}"
        elif reason is None and self.server.lame_duck:
            reason = "lame duck mode"
        body = {"status": "ready" if reason is None else "unavailable", "node_id": self.settings.node_name,
                "role": status.role, "leader": status.leader, "commit_index": status.commit_index,
                "last_applied": status.last_applied}
        if reason is not None:
            body["error"] = reason
        return (200 if reason is None else 503), body

    def _is_leader(self) -> bool:
        return self.raft.status().role == "leader"

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background coroutine, kept referenced until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, serve_clients: bool = True) -> None:
        """Bind the monitoring port, then (unless told to wait) the client and route ports."""
        if self.monitor is not None:
            await _bind_monitor(self.monitor, self.settings)
        if serve_clients:
            await self.serve_clients()

    async def serve_clients(self) -> None:
        """Bind the client and route ports and start background work (not after a shutdown)."""
        s = self.settings
        if self.server.stopped.is_set():  # shut down while starting (Raft's first tick found damage)
            return
        try:
            await self.server.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {s.host}:{s.port}: {exc.strerror}") from None
        if s.cluster_addr:
            try:
                await self.routes.start()
            except OSError as exc:
                await self.server.shutdown()
                raise ConfigError(f"cannot listen on {s.cluster_addr} (routes): {exc.strerror}") from None
        if not s.legacy_clock:
            self.spawn(self.mailboxes.run_clock(s.raft_addr, lambda: len(self.raft.status().members)))
            self.spawn(skew.watch(self._skew_ms))
        self.spawn(self.mailboxes.run_expiry(s.expiry_interval, legacy=s.legacy_clock))
        self.spawn(self.mailboxes.pull.run_ticks(self._is_leader, TICK_INTERVAL))

    async def shutdown(self) -> None:
        """SIGTERM/SIGINT: close the routes (peers see this node go at once), then the server."""
        self.routes.close()
        await self.server.shutdown()

    def close(self) -> None:
        """Stop the routes and Raft and close the store (after the server stopped)."""
        self.routes.close()
        if self.monitor is not None:
            self.monitor.close()
        for task in self._tasks:
            task.cancel()
        self.raft.stop()
        self.store.close()


def joining(settings: Settings, seeds: list[str], wait: float = 0.0) -> tuple[Settings, bool]:
    """Settings whose peers are the members the first seed to answer knows, and whether this node is one.

    Seeds are tried in order, again and again for up to ``wait`` seconds (at least once each).
    """
    if not seeds:
        raise ClusterAdminError("no seed other than this node itself")
    deadline = time.monotonic() + wait
    while True:
        errors = []
        for seed in seeds:
            try:
                members = admin.node_status(seed, password=settings.cluster_password).members
            except ClusterAdminError as exc:
                errors.append(str(exc))
                continue
            log.info("cluster of %s: members %s", seed, ", ".join(members))
            return settings.model_copy(update={"peers": members}), settings.raft_addr in members
        if time.monotonic() >= deadline:
            raise ClusterAdminError("no seed answered: " + "; ".join(errors))
        log.info("no seed answered yet (%s); retrying", "; ".join(errors))
        time.sleep(1.0)


def _add_through(seeds: list[str], address: str, password: str | None) -> str:
    """Have any answering seed commit ``address`` as a member (or find it is one); the seed that did."""
    errors = []
    for seed in seeds:
        try:
            admin.add_member(seed, address, password=password)  # also when an earlier try committed
            return seed
        except ClusterAdminError as exc:
            errors.append(str(exc))
    raise ClusterAdminError("; ".join(errors))


async def _join(node: Node, seeds: list[str], wait: float) -> None:
    """Become a member through ``seeds``, retrying for up to ``wait`` seconds (another change may be
    in flight, or no leader elected yet); on failure the node shuts down (the CLI exits non-zero)."""
    address = node.settings.raft_addr
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + wait
    while True:
        try:
            seed = await loop.run_in_executor(None, _add_through, seeds, address, node.settings.cluster_password)
            break
        except ClusterAdminError as exc:
            if time.monotonic() >= deadline:
                node.failure = exc
                log.critical("could not join the cluster through %s: %s", ", ".join(seeds), exc)
                await node.server.shutdown()
                return
            log.info("joining through %s not done yet (%s); retrying", ", ".join(seeds), exc)
            await asyncio.sleep(1.0)
    node.joining_through = None
    log.info("joined the cluster through %s as %s; catching up from the leader", seed, address)


MAX_REBUILDS = 3  # per process: a rebuild that keeps finding damage (a bad snapshot sent again) stops


async def serve(settings: Settings, join_seeds: list[str] | None = None, join_wait: float = 0.0) -> Mq9Error | None:
    """Run one broker node until SIGTERM/SIGINT (graceful) or SIGUSR2 (lame duck) ends it.

    With ``join_seeds`` the node asks those members to add it to the cluster once it runs. A node
    whose data is damaged (at start, or found by Raft later) rebuilds itself from its peers, or
    refuses to serve if it cannot (see ``_rebuild``). Returns the error that ended the node, if one did.
    """
    prepare_data_dir(settings)
    reason = rebuild.pending(settings.data_dir)
    if reason is not None:
        log.warning("a rebuild from peers was under way (damage: %s): going on with it", reason)
    rebuilds = 0
    while True:
        state = None
        if reason is not None:
            outcome = await _rebuild(settings, reason, rebuilds)
            rebuilds += 1
            if not isinstance(outcome, tuple):
                return outcome
            settings, join_seeds, state = outcome
            join_wait = math.inf
        try:
            failure = await _run_node(settings, join_seeds, join_wait, state)
        except Exception as exc:  # rocksdict raises plain Exceptions, "Corruption: ..." among them
            if not rebuild.is_damage(exc):
                raise
            failure = exc if isinstance(exc, Mq9Error) else StoreCorrupt(str(exc))
        if failure is None or not rebuild.is_damage(failure):
            return failure
        reason = rebuild.damage_reason(failure)  # frees the damaged store for the rebuilt one


async def _run_node(settings: Settings, join_seeds: list[str] | None, join_wait: float,
                    rebuilding: RebuildState | None) -> Mq9Error | None:
    """Build the node and run it until it stops; ``rebuilding``: it joins with an empty data dir and
    serves clients only once it has caught up."""
    loop = asyncio.get_running_loop()
    node = Node(settings, loop)
    node.rebuilding = rebuilding
    try:
        await node.start(serve_clients=rebuilding is None)
        _freeze_startup_objects()
        if join_seeds is not None:
            node.joining_through = join_seeds
            node.spawn(_join(node, join_seeds, join_wait))
        loop.add_signal_handler(signal.SIGTERM, lambda: node.spawn(node.shutdown()))
        loop.add_signal_handler(signal.SIGINT, lambda: node.spawn(node.shutdown()))
        loop.add_signal_handler(signal.SIGUSR2, lambda: node.spawn(node.server.enter_lame_duck()))
        if rebuilding is None:
            _log_ready(node)
        else:
            node.spawn(_finish_rebuild(node))
        await node.server.stopped.wait()
    finally:
        node.close()
        gc.unfreeze()  # a process that runs serve() again (the tests) collects the old node's cycles
    return node.failure


def _freeze_startup_objects() -> None:
    """Keep the garbage collector's full passes off what start-up built (modules, settings, the
    wired parts): those objects live as long as the process, and walking them took every full
    collection about 15 ms, a stall of the event loop that the send path's allocations set off
    every few thousand requests (measured under 256 sends in flight: 18 ms -> 0.2 ms)."""
    gc.collect()
    gc.freeze()


def _log_ready(node: Node) -> None:
    s = node.settings
    log.info("mq9cluster %s ready: nats://%s:%d, raft %s, routes %s, data dir %s, server name %s",
             __version__, s.host, node.server.port, s.raft_addr, s.cluster_addr or "off", s.data_dir, s.server_name)


async def _rebuild(settings: Settings, reason: str,
                   rebuilds: int) -> tuple[Settings, list[str], RebuildState] | Mq9Error | None:
    """Damage was found: with peers (and ``auto_rebuild``), move the data aside, have the peers remove
    this member and return the settings to join them again with; otherwise refuse to serve until
    stopped (the damage as the error). No NATS listener meanwhile; ``/healthz`` answers 503 with the
    state. None if the node was stopped during the rebuild (the marker makes the next start go on)."""
    state = RebuildState(reason)
    seeds = settings.other_peers
    log.critical("this node's data is damaged: %s", reason)
    refusal = None
    if not settings.auto_rebuild:
        refusal = "auto_rebuild is off"
    elif not seeds:
        refusal = "no peers to rebuild from (a single node, or no --peers)"
    elif rebuilds >= MAX_REBUILDS:
        refusal = f"{rebuilds} rebuilds in this run found damage again"
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    stopped = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: (stop.set(), stopped.set()))
    monitor = await _status_monitor(settings, state)
    try:
        if refusal is not None:
            state.refused, state.phase = True, f"refused: {refusal}; the operator must act"
            log.critical("refusing to serve and NOT rebuilding (%s). Restore the data dir %s from a backup; or, "
                         "with healthy peers, `mq9cluster leave` this member, empty its data dir and "
                         "`mq9cluster join` it. /healthz reports this until the process is stopped",
                         refusal, settings.data_dir)
            await stopped.wait()
            return DataDamaged(f"data dir {settings.data_dir} is damaged ({reason}); not rebuilt: {refusal}")
        state.phase = "moving the damaged data aside"
        await asyncio.to_thread(rebuild.set_aside, settings.data_dir, reason)
        state.phase = "asking the peers to remove this member"
        log.warning("rebuilding from peers %s: removing %s from the cluster first", ", ".join(seeds),
                    settings.raft_addr)
        if not await asyncio.to_thread(rebuild.leave, settings.raft_addr, seeds, settings.cluster_password, stop):
            return None
        state.phase = "joining"
        joined = await asyncio.to_thread(_rejoin_settings, settings, seeds, stop)
        return None if joined is None else (joined, seeds, state)
    finally:
        if monitor is not None:
            monitor.close()


def _rejoin_settings(settings: Settings, seeds: list[str], stop: threading.Event) -> Settings | None:
    """Settings to join with once the seeds agree this node is no member (a lagging seed may not yet)."""
    while not stop.is_set():
        joined, member = joining(settings, seeds, REJOIN_WAIT)
        if not member:
            return joined
        stop.wait(rebuild.RETRY_INTERVAL)
    return None


async def _status_monitor(settings: Settings, state: RebuildState) -> Monitor | None:
    """The monitoring port alone, answering with ``state`` (no store, no Raft, no clients)."""
    if not settings.http_port:
        return None
    monitor = Monitor(Server(settings))
    monitor.routes["/healthz"] = lambda query: (503, state.health())
    monitor.routes["/readyz"] = lambda query: (503, {"status": "unavailable", "error": f"data damaged: {state.phase}"})
    await _bind_monitor(monitor, settings)
    return monitor


async def _bind_monitor(monitor: Monitor, s: Settings) -> None:
    try:
        await monitor.start(s.host, s.http_port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {s.host}:{s.http_port} (monitoring): {exc.strerror}") from None


async def _finish_rebuild(node: Node) -> None:
    """Serve clients once the rejoined node has caught up; drop the marker; say so."""
    state = node.rebuilding
    assert state is not None
    while node.joining_through is not None or node.raft.status().not_ready_reason() is not None:
        state.phase = "joining" if node.joining_through is not None else "catching up from the leader"
        await asyncio.sleep(0.1)
    try:
        await node.serve_clients()
    except ConfigError as exc:
        node.failure = exc
        log.critical("%s", exc)
        await node.server.shutdown()
        return
    await asyncio.to_thread(rebuild.finish, node.settings.data_dir)
    node.rebuilding = None
    log.warning("rebuilt from peers in %.1f s (damage was: %s); serving again", time.time() - state.since,
                state.reason)
    _log_ready(node)


def run(settings: Settings, join_seeds: list[str] | None = None, join_wait: float = 0.0) -> None:
    """Configure logging and run the node on uvloop; with ``join_seeds``, join their cluster.

    ``join_wait``: seconds to keep retrying seeds that do not answer and an addition that fails.
    """
    logs.configure(settings.log_level_number)
    if join_seeds is not None:
        seeds = [seed for seed in join_seeds if seed != settings.raft_addr]
        settings, member = joining(settings, seeds, join_wait)
        join_seeds = None if member else seeds
        if member:
            log.info("%s is a member already: starting", settings.raft_addr)
    failure = uvloop.run(serve(settings, join_seeds, join_wait))
    if failure is not None:
        raise failure
