"""Routes: core NATS across real mq9cluster processes meshed with --cluster/--routes, driven by
nats-py and raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.errors import NoRespondersError

from mq9cluster.server.routes import route_proof
from tests.interop.wire import WireClient
from tests.support.broker import Broker
from tests.support.nats_client import collect, connect, create, request, run, until

pytestmark = pytest.mark.timeout(120)

ROUTE_INFO = b'INFO {"server_id":"NFAKE","route_proto":1,"route_url":"127.0.0.1:1"}\r\n'


def routed(workdir: Path, count: int) -> list[Broker]:
    """``count`` unstarted nodes, each told every node's route address (its own included)."""
    nodes = [Broker("mq9cluster", workdir) for _ in range(count)]
    for node in nodes:
        seed(node, nodes)
    return nodes


def start_mesh(start: Callable[[Broker], Broker], workdir: Path, count: int) -> list[Broker]:
    """Start ``count`` nodes that all know each other; once every route is up."""
    nodes = routed(workdir, count)
    for node in nodes:
        start(node)
    wait_routes(nodes, count - 1)
    return nodes


def seed(node: Broker, seeds: list[Broker], *extra: str) -> Broker:
    """Give ``node`` a route listener and ``seeds`` as its --routes."""
    routes = ",".join(s.cluster_addr for s in seeds) or node.cluster_addr
    node.extra_args = ["--cluster", node.cluster_addr, "--routes", routes, *extra]
    return node


def wait_routes(nodes: list[Broker], want: int, timeout: float = 15.0) -> None:
    """Until each node has ``want`` routes up."""
    deadline = time.monotonic() + timeout
    while True:
        counts = [node.http_json("/routez")["num_routes"] for node in nodes]
        if all(count == want for count in counts):
            return
        assert time.monotonic() < deadline, f"routes {counts}, want {want} each"
        time.sleep(0.05)


def remote_subs(node: Broker) -> dict[str, list[str]]:
    """The interest each of ``node``'s peers announced, by the peer's client URL."""
    return {r["client_url"]: r["subscriptions_list"] for r in node.http_json("/routez?subs=1")["routes"]}


def route_stats(node: Broker) -> dict[str, dict]:
    return {r["client_url"]: r for r in node.http_json("/routez")["routes"]}


def assert_no_traceback(nodes: list[Broker]) -> None:
    """A node that logged an exception failed somewhere, even if the test saw nothing."""
    for node in nodes:
        log = node.log_path.read_text(errors="replace")
        assert "Traceback" not in log, log[-4000:]


def client_url(node: Broker) -> str:
    return f"127.0.0.1:{node.port}"


@contextlib.asynccontextmanager
async def connected(*nodes: Broker) -> AsyncIterator[list[nats.NATS]]:
    """nats-py connections, one per node given, closed at the end."""
    clients = [await connect(node) for node in nodes]
    try:
        yield clients
    finally:
        for nc in clients:
            await nc.close()


async def interest(node: Broker, subject: str, peers: int = 1, timeout: float = 10.0) -> None:
    """Until exactly ``peers`` of ``node``'s peers announced ``subject`` ("subject queue")."""
    deadline = time.monotonic() + timeout
    while sum(subject in subs for subs in remote_subs(node).values()) != peers:
        assert time.monotonic() < deadline, f"{subject!r} on {peers} peers: {remote_subs(node)}"
        await asyncio.sleep(0.02)


async def flows(publisher: nats.NATS, at: Broker, receiver: nats.NATS, subject: str) -> None:
    """A message published through ``publisher`` (connected to node ``at``) reaches ``receiver``."""
    got = await collect(receiver, subject)
    await interest(at, subject)
    await publisher.publish(subject, b"hello")
    await until(lambda: len(got) == 1, f"a message on {subject}")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Broker]]:
    """Three nodes in a full mesh (each its own Raft group: core routing needs none shared)."""
    nodes: list[Broker] = []

    def start(node: Broker) -> Broker:
        nodes.append(node)
        return node.start()

    try:
        yield start_mesh(start, tmp_path_factory.mktemp("mesh"), 3)
    finally:
        for node in nodes:
            node.stop()
    assert_no_traceback(nodes)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """Start one node with the given seeds (or build and start several); all stopped at teardown."""
    started: list[Broker] = []

    def start(node: Broker) -> Broker:
        started.append(node)
        return node.start()

    yield start
    for node in started:
        node.stop()
    assert_no_traceback(started)


def test_publish_reaches_each_subscription_on_every_node_once(mesh):
    a, b, c = mesh

    async def scenario():
        async with connected(*mesh) as (ca, cb, cc):
            local = await collect(ca, "orders.new")
            exact_c = await collect(cc, "orders.new")
            star_b = await collect(cb, "orders.*")
            full_b = await collect(cb, "orders.>")
            for subject, peers in (("orders.new", 1), ("orders.*", 1), ("orders.>", 1)):
                await interest(a, subject, peers)
            before = route_stats(a)
            for i in range(200):
                await ca.publish("orders.new", b"%d" % i)
            expected = [b"%d" % i for i in range(200)]
            groups = (local, exact_c, star_b, full_b)
            await until(lambda: all(len(g) >= 200 for g in groups), "every subscription")
            await asyncio.sleep(0.3)  # nothing late: no duplicates
            for got in groups:
                assert [m.data for m in got] == expected
            after = route_stats(a)
            for peer in (b, c):  # one copy per peer, though b has two matching subscriptions
                assert after[client_url(peer)]["out_msgs"] - before[client_url(peer)]["out_msgs"] == 200

    run(scenario())


def test_unsubscribe_stops_forwarding_after_the_last_local_interest(mesh):
    a, b, _ = mesh

    async def scenario():
        async with connected(a, b, b) as (ca, cb1, cb2):
            first = await cb1.subscribe("gone.x")
            second = await cb2.subscribe("gone.x")
            await interest(a, "gone.x")
            await first.unsubscribe()
            await cb1.flush()
            await asyncio.sleep(0.2)
            assert "gone.x" in remote_subs(a)[client_url(b)]  # refcounted: the other one still listens
            await second.unsubscribe()
            await cb2.flush()
            await interest(a, "gone.x", peers=0)
            before = route_stats(a)[client_url(b)]["out_msgs"]
            for _ in range(10):
                await ca.publish("gone.x", b"x")
            await ca.flush()
            await asyncio.sleep(0.2)
            assert route_stats(a)[client_url(b)]["out_msgs"] == before

    run(scenario())


def test_queue_group_on_three_nodes_gets_each_message_once(mesh):
    a, b, c = mesh

    async def scenario():
        async with connected(*mesh) as clients:
            members = [await collect(nc, "jobs", queue="workers") for nc in clients]
            remote_only = [await collect(nc, "tasks", queue="far") for nc in clients[1:]]
            plain_b = await collect(clients[1], "tasks")
            for node in mesh:
                await interest(node, "jobs workers", peers=2)
            await interest(a, "tasks far", peers=2)
            await interest(a, "tasks", peers=1)
            for i in range(1000):  # from every node: each prefers its local member
                await clients[i % 3].publish("jobs", b"%d" % i)
            for i in range(1000):  # nobody on a: one of b and c, never both
                await clients[0].publish("tasks", b"%d" % i)
            await until(lambda: sum(map(len, members)) >= 1000, "jobs")
            await until(lambda: sum(map(len, remote_only)) >= 1000 and len(plain_b) >= 1000, "tasks")
            await asyncio.sleep(0.3)
            for group in (members, remote_only):
                seen = Counter(m.data for got in group for m in got)
                assert len(seen) == 1000 and set(seen.values()) == {1}
            assert [len(got) for got in members] == [334, 333, 333]  # local preference
            assert all(len(got) > 100 for got in remote_only)  # spread over both remote nodes
            assert [m.data for m in plain_b] == [b"%d" % i for i in range(1000)]

    run(scenario())


def test_request_on_one_node_answered_on_another(mesh):
    a, b, c = mesh

    async def scenario():
        async with connected(*mesh) as (ca, cb, cc):
            answered = Counter()

            def responder(name: str):
                async def respond(msg):
                    answered[name] += 1
                    await msg.respond(name.encode() + b":" + msg.data)
                return respond

            await cb.subscribe("svc.echo", cb=responder("b"))
            await cb.subscribe("svc.pool", queue="pool", cb=responder("pool-b"))
            await cc.subscribe("svc.pool", queue="pool", cb=responder("pool-c"))
            await interest(a, "svc.echo")
            await interest(a, "svc.pool pool", peers=2)
            for i in range(20):
                reply = await ca.request("svc.echo", b"%d" % i, timeout=5)
                assert reply.data == b"b:%d" % i
                reply = await ca.request("svc.pool", b"%d" % i, timeout=5)
                assert reply.data.endswith(b":%d" % i)
            await asyncio.sleep(0.2)
            assert answered["b"] == 20 and answered["pool-b"] + answered["pool-c"] == 20

    run(scenario())


def test_no_responders_only_when_nobody_anywhere_listens(mesh):
    a, b, _ = mesh

    async def scenario():
        async with connected(a, b) as (ca, cb):
            with pytest.raises(NoRespondersError):
                await ca.request("nobody.home", b"", timeout=5)
            sub = await cb.subscribe("somebody.home")
            await interest(a, "somebody.home")
            with pytest.raises(asyncio.TimeoutError):  # heard on b (no answer), so no 503
                await ca.request("somebody.home", b"", timeout=0.5)
            await sub.unsubscribe()
            await cb.flush()
            await interest(a, "somebody.home", peers=0)
            with pytest.raises(NoRespondersError):
                await ca.request("somebody.home", b"", timeout=5)

    run(scenario())


def test_info_lists_every_node_and_varz_counts_routes(mesh):
    urls = {client_url(node) for node in mesh}
    for node in mesh:
        client = WireClient(node.port)
        assert client.info["connect_urls"][0] == client_url(node)
        assert set(client.info["connect_urls"]) == urls
        client.close()
        varz = node.http_json("/varz")
        assert varz["routes"] == 2
        assert varz["cluster"]["cluster_port"] == node.cluster_port


def test_garbage_on_the_route_port_gets_err_and_the_node_keeps_serving(mesh):
    a, b, _ = mesh
    cases = [
        (b"GARBAGE\r\n", b"-ERR 'Unknown Protocol Operation'\r\n"),
        (b"CONNECT {}\r\nPING\r\n", b"-ERR 'Unknown Protocol Operation'\r\n"),
        (b"GET /routez HTTP/1.1\r\n\r\n", b"-ERR 'Unknown Protocol Operation'\r\n"),
        (b'INFO {"server_id":"x"}\r\n', b"-ERR 'Route Handshake Expected'\r\n"),
        (b"INFO [1]\r\n", b"-ERR 'Bad JSON'\r\n"),
        (b"RS+ foo\r\n", b"-ERR 'Route Handshake Expected'\r\n"),
        (b"RMSG still.serving 1\r\nx\r\n", b"-ERR 'Route Handshake Expected'\r\n"),
        (b"\x00" * 10000, b"-ERR 'Unknown Protocol Operation'\r\n"),
    ]
    silent = WireClient(a.cluster_port)  # says nothing at all: cut after the handshake timeout
    for garbage, answer in cases:
        peer = WireClient(a.cluster_port)
        assert peer.info["route_proto"] == 1 and peer.info["route_url"] == a.cluster_addr
        peer.send(garbage)
        assert peer.read_all_until_close(3) == answer, garbage
    assert silent.read_all_until_close(8) == b"-ERR 'Route Handshake Timeout'\r\n"
    assert a.http_json("/routez")["num_routes"] == 2

    async def scenario():
        async with connected(a, b) as (ca, cb):
            await flows(cb, b, ca, "still.serving")

    run(scenario())


def test_malformed_lines_on_a_live_route_close_only_that_route(nodes, tmp_path):
    node = nodes(seed(Broker("mq9cluster", tmp_path), []))
    for bad, answer in [(b"RMSG foo a b c\r\n", b"-ERR 'Parse Error'\r\n"),
                        (b"RS+ foo..bar\r\n", b"-ERR 'Invalid Subject'\r\n"),
                        (b"RMSG foo 3\r\nabcdef\r\n", b"-ERR 'Unknown Protocol Operation'\r\n")]:
        peer = WireClient(node.cluster_port)
        peer.send(ROUTE_INFO + b"PING\r\n")
        assert peer.read_line() == b"PONG\r\n"
        assert node.http_json("/routez")["num_routes"] == 1
        peer.send(bad)
        assert answer in peer.read_all_until_close(3)
    client = WireClient(node.port)
    assert client.ping_pong()


def test_slow_route_is_cut_and_the_node_keeps_serving(nodes, tmp_path):
    node = nodes(seed(Broker("mq9cluster", tmp_path), [], "--max-pending", "262144", "--write-deadline", "1"))
    stuck = WireClient(node.cluster_port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.send(ROUTE_INFO + b"RS+ flood\r\nPING\r\n")
    assert stuck.read_line() == b"PONG\r\n"
    publisher = WireClient(node.port)
    publisher.handshake()
    frame = b"PUB flood 1024\r\n" + b"x" * 1024 + b"\r\n"
    deadline = time.monotonic() + 20
    while node.http_json("/routez")["num_routes"] == 1:  # never read: must be cut, not buffered
        assert time.monotonic() < deadline, "slow route not cut"
        publisher.send(frame * 100)
    assert publisher.ping_pong()
    assert "route to" in node.output() and "cut" in node.output()


def hello(nonce: str) -> bytes:
    return ROUTE_INFO.replace(b"}\r\n", b',"auth_nonce":"%s"}\r\n' % nonce.encode())


def test_cluster_password_guards_the_route_port(nodes, tmp_path):
    a, b = Broker("mq9cluster", tmp_path), Broker("mq9cluster", tmp_path)
    for node in (a, b):
        nodes(seed(node, [a, b], "--cluster-password", "shared"))
    wait_routes([a, b], 1)
    intruder = nodes(seed(Broker("mq9cluster", tmp_path), [a, b], "--cluster-password", "wrong"))
    plain = nodes(seed(Broker("mq9cluster", tmp_path), [a]))
    deadline = time.monotonic() + 15
    while a.log_path.read_text().count("wrong cluster password") < 1 or "no cluster password" not in a.log_path.read_text():
        assert time.monotonic() < deadline, a.log_path.read_text()[-3000:]
        time.sleep(0.1)

    first = WireClient(a.cluster_port)
    nonce = first.info["auth_nonce"]
    assert len(nonce) == 32 and WireClient(a.cluster_port).info["auth_nonce"] != nonce
    wrong = route_proof("wrong", True, nonce, "n1", "NFAKE")
    first.send(hello("n1") + b'INFO {"auth_proof":"%s"}\r\nRMSG secret.raw 1\r\nx\r\n' % wrong.encode())
    answer = first.read_all_until_close(3)
    assert answer.endswith(b"-ERR 'Authorization Violation'\r\n") and b"RMSG" not in answer
    for attempt in (ROUTE_INFO + b"RMSG secret.raw 1\r\nx\r\n", hello("n2") + b"RS+ secret.>\r\n"):
        peer = WireClient(a.cluster_port)
        peer.send(attempt)
        assert peer.read_all_until_close(3).endswith(b"-ERR 'Authorization Violation'\r\n"), attempt

    knows = WireClient(a.cluster_port)  # a raw peer with the password: a proves itself, then takes it
    knows.send(hello("n3"))
    proof = json.loads(knows.read_line()[5:-3])["auth_proof"]
    assert proof == route_proof("shared", False, "n3", knows.info["auth_nonce"], knows.info["server_id"])
    knows.send(b'INFO {"auth_proof":"%s"}\r\nPING\r\n'
               % route_proof("shared", True, knows.info["auth_nonce"], "n3", "NFAKE").encode())
    while knows.read_line() != b"PONG\r\n":
        pass
    wait_routes([a], 2)
    knows.close()
    wait_routes([a, b], 1)
    wait_routes([intruder, plain], 0)

    async def scenario():
        async with connected(a, b, intruder, plain) as (ca, cb, ci, cp):
            await flows(cb, b, ca, "mesh.ok")
            got = await collect(ca, "secret.>")
            await interest(b, "secret.>")
            for outsider in (ci, cp):
                await outsider.publish("secret.injected", b"x")
                await outsider.flush()
            await cb.publish("secret.fine", b"y")
            await until(lambda: len(got) >= 1, "the message from b")
            await asyncio.sleep(0.3)
            assert [m.subject for m in got] == ["secret.fine"]

    run(scenario())


def test_node_joining_through_one_seed_meets_the_whole_mesh(nodes, tmp_path):
    a = nodes(seed(Broker("mq9cluster", tmp_path), []))
    b = Broker("mq9cluster", tmp_path)
    nodes(seed(b, [a]))
    wait_routes([a, b], 1)
    watcher = WireClient(a.port)
    watcher.handshake(protocol=1)
    legacy = WireClient(a.port)
    legacy.handshake(protocol=0)
    c = seed(Broker("mq9cluster", tmp_path), [b])  # told only of b, and of itself by another name
    c.extra_args[3] += f",localhost:{c.cluster_port}"
    nodes(c)
    wait_routes([a, b, c], 2)
    line = watcher.read_line()
    while json.loads(line[5:-3]).get("connect_urls", []).__len__() < 3:  # async INFO when c joined
        line = watcher.read_line()
    assert line.startswith(b"INFO ")
    assert set(json.loads(line[5:-3])["connect_urls"]) == {client_url(n) for n in (a, b, c)}
    assert legacy.drain_quiet(0.3) == b""  # protocol 0: no async INFO

    async def scenario():
        async with connected(a, c) as (ca, cc):
            await flows(cc, c, ca, "join.to_a")
            await flows(ca, a, cc, "join.to_c")

    run(scenario())


def test_lame_duck_node_leaves_the_others_connect_urls(nodes, tmp_path):
    a, b = routed(tmp_path, 2)
    a.extra_args += ["--lame-duck-duration", "1", "--lame-duck-grace", "0.5"]
    for node in (a, b):
        nodes(node)
    wait_routes([a, b], 1)
    watcher = WireClient(b.port)
    watcher.handshake(protocol=1)
    assert set(watcher.info["connect_urls"]) == {client_url(a), client_url(b)}
    a.signal(signal.SIGUSR2)
    line = watcher.read_line()
    assert line.startswith(b"INFO ") and json.loads(line[5:-3])["connect_urls"] == [client_url(b)]
    assert a.wait_exit(10) == 0
    wait_routes([b], 0)


def test_routes_come_back_after_a_node_restarts(nodes, tmp_path):
    a, b, c = start_mesh(nodes, tmp_path, 3)

    async def scenario():
        async with connected(a) as (ca,):
            got = await collect(ca, "after.restart")
            await interest(b, "after.restart")
            b.restart()
            await asyncio.get_running_loop().run_in_executor(None, wait_routes, [a, b, c], 2)
            async with connected(b, c) as (cb, cc):
                await interest(b, "after.restart")  # the interest of a was sent again to the new b
                await cb.publish("after.restart", b"from new b")
                await until(lambda: len(got) == 1, "message from the restarted node")
                await flows(cc, c, cb, "to.new.b")

    run(scenario())


def test_nats_py_fails_over_to_a_node_it_learned_from_connect_urls(nodes, tmp_path):
    a, b, c = start_mesh(nodes, tmp_path, 3)

    async def scenario():
        reconnected = asyncio.Event()

        async def on_reconnect():
            reconnected.set()

        nc = await nats.connect(a.url, reconnect_time_wait=0.1, max_reconnect_attempts=50,
                                reconnected_cb=on_reconnect)
        assert {srv.netloc for srv in nc.discovered_servers} == {client_url(b), client_url(c)}
        got = await collect(nc, "failover.x")
        a.kill()
        await asyncio.wait_for(reconnected.wait(), 10)
        assert nc.connected_url.port in (b.port, c.port)
        other = c if nc.connected_url.port == b.port else b
        await interest(other, "failover.x")  # resubscribed on the new node, interest routed
        async with connected(other) as (co,):
            await co.publish("failover.x", b"after failover")
            await until(lambda: len(got) == 1, "message after failover")
        await nc.close()

    run(scenario())


def test_raft_cluster_routes_core_nats_but_never_mailbox_subjects(cluster):
    group = cluster(3)
    a, b, c = group.nodes

    async def scenario():
        async with connected(*group.nodes) as (ca, cb, cc):
            address = await create(ca)
            group.wait_applied()
            mailbox = await collect(cb, f"$mq9.AI.MAILBOX.{address}.*")
            everything = await collect(cb, ">")
            core = await collect(cc, "core.x")
            await interest(a, ">")
            await interest(a, "core.x")
            for i in range(20):
                ack = await request(ca, f"$mq9.AI.MAILBOX.{address}", b"m%d" % i)
                assert ack == {"msg_id": i + 1}
            await ca.publish("core.x", b"plain")
            await until(lambda: len(mailbox) >= 20 and len(core) == 1, "mailbox and core deliveries")
            await asyncio.sleep(0.5)
            assert [m.headers["mq9-msg-id"] for m in mailbox] == [str(i + 1) for i in range(20)]
            assert [m.data for m in mailbox] == [b"m%d" % i for i in range(20)]
            assert not [m.subject for m in everything if m.subject.startswith("$mq9.")]
            assert "core.x" in [m.subject for m in everything]
            assert not [s for subs in remote_subs(a).values() for s in subs if s.startswith("$mq9.")]

    run(scenario())
