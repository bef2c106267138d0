"""Boot test of the Helm chart: its pods, started from the rendered StatefulSet as local processes,
form one Raft cluster and one mesh of routes, elect a leader, take writes through every pod, and
scale up and down.

What runs is the container's command, args and env exactly as rendered (see local_pods.py for
what stands in for the kubelet and the pod network). A chart whose pods would never form a
cluster (wrong peer names, ports, entry logic or config) fails here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.chart import NAMESPACE, one, render
from tests.deploy.fake_api import FakeApi
from tests.deploy.local_pods import LocalPod, PodNetwork
from tests.support.nats_client import collect, connect, create, request, run, until

READY_TIMEOUT = 30.0


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeApi]:
    statefulset = one(render(), "StatefulSet")["metadata"]["name"]
    server = FakeApi(tmp_path, NAMESPACE, statefulset)
    yield server
    server.close()


@pytest.fixture
def pods() -> Iterator[list[LocalPod]]:
    started: list[LocalPod] = []
    yield started
    for pod in started:
        pod.stop()


def wait_ready(pods: list[LocalPod], timeout: float = READY_TIMEOUT) -> None:
    """Until every pod's rendered readiness probe passes (what the client Service waits for)."""
    deadline = time.monotonic() + timeout
    while True:
        answers = {pod.name: pod.probe("readinessProbe") for pod in pods}
        if all(code == 200 for code, _ in answers.values()):
            return
        for pod in pods:
            if pod.proc is None or pod.proc.poll() is not None:
                pytest.fail(f"{pod.name} is not running:\n{pod.output()}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {pod.name}\n{pod.output()}" for pod in pods)
            pytest.fail(f"pods not ready after {timeout} s: {answers}\n{logs}")
        time.sleep(0.1)


def members_seen(pods: list[LocalPod]) -> dict[str, tuple[str, list[str]]]:
    """Each pod's view: the leader and the members (its own address and its peers)."""
    views = {}
    for pod in pods:
        raftz = pod.http_json("/raftz")
        views[pod.name] = (raftz["leader"], sorted([raftz["address"], *raftz["peers"]]))
    return views


def assert_one_cluster(pods: list[LocalPod], timeout: float = 15.0) -> None:
    """Every pod agrees on one leader and on the members, which are exactly these pods."""
    expected = sorted(pod.raft_addr for pod in pods)
    deadline = time.monotonic() + timeout
    while True:
        views = members_seen(pods)
        leaders = {leader for leader, _ in views.values()}
        if len(leaders) == 1 and None not in leaders and all(m == expected for _, m in views.values()):
            assert leaders <= set(expected)
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not one cluster of {expected}: {views}")
        time.sleep(0.1)


def assert_full_mesh(pods: list[LocalPod], timeout: float = 15.0) -> None:
    """Every pod has a core-NATS route to each other pod, which tells clients its client address."""
    def others(pod: LocalPod, port: str) -> list[str]:
        return sorted(p.network.address(p.ordinal, port) for p in pods if p is not pod)

    deadline = time.monotonic() + timeout
    while True:
        views = {pod.name: pod.http_json("/routez")["routes"] for pod in pods}
        if all(sorted(r["route_url"] for r in views[pod.name]) == others(pod, "cluster")
               and sorted(r["client_url"] for r in views[pod.name]) == others(pod, "nats") for pod in pods):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not a full mesh of routes: {views}")
        time.sleep(0.1)


def publish_across(publisher: LocalPod, subscriber: LocalPod) -> None:
    """Core NATS: a subscriber on one pod gets what a client of another pod publishes (over a route)."""
    async def scenario() -> None:
        sub_nc, pub_nc = await connect(subscriber), await connect(publisher)
        got = await collect(sub_nc, "greet.*")
        await sub_nc.flush()
        deadline = time.monotonic() + 10
        while not got:  # until the subscription's interest has reached the publisher's pod
            assert time.monotonic() < deadline, f"nothing from {publisher.name} reached {subscriber.name}"
            await pub_nc.publish("greet.pod", publisher.name.encode())
            await pub_nc.flush()
            await asyncio.sleep(0.05)
        assert got[0].data == publisher.name.encode()
        await sub_nc.close()
        await pub_nc.close()

    run(scenario())


def write_through_each(writers: list[LocalPod], reader: LocalPod) -> None:
    """A mailbox created on the first pod gets one durable send through each pod; the reader replays all."""
    async def scenario() -> None:
        connections = [await connect(pod) for pod in writers]
        box = await create(connections[0])
        for pod, nc in zip(writers, connections):
            reply = await request(nc, f"$mq9.AI.MAILBOX.{box}", f"via {pod.name}".encode())
            assert "msg_id" in reply, (pod.name, reply)
        nc = await connect(reader)
        inbox = await collect(nc, f"$mq9.AI.MAILBOX.{box}.*")
        await until(lambda: len(inbox) == len(writers), f"{len(writers)} messages replayed on {reader.name}")
        assert sorted(m.data.decode() for m in inbox) == sorted(f"via {pod.name}" for pod in writers)
        for c in [*connections, nc]:
            await c.close()

    run(scenario())


def pod_network(docs: list[dict]) -> PodNetwork:
    statefulset = one(docs, "StatefulSet")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    return PodNetwork(
        statefulset=statefulset["metadata"]["name"], headless=statefulset["spec"]["serviceName"],
        namespace=NAMESPACE, container_ports={p["name"]: p["containerPort"] for p in container["ports"]},
    )


@pytest.fixture
def pod(tmp_path: Path, api: FakeApi, pods: list[LocalPod]):
    """Make (not start) pod ``ordinal`` of a rendering; all pods share one stand-in network."""
    networks: list[PodNetwork] = []

    def make(docs: list[dict], ordinal: int) -> LocalPod:
        if not networks:
            networks.append(pod_network(docs))
        made = LocalPod(docs, ordinal, networks[0], tmp_path, api.address)
        api.write_service_account(made.volume_dir("kube-api-access"), NAMESPACE)
        pods.append(made)
        return made

    return make


def test_rendered_pods_form_a_cluster_take_writes_and_scale(api: FakeApi, pod) -> None:
    three = render()
    statefulset = one(three, "StatefulSet")

    # helm install: three pods at once (podManagementPolicy Parallel) form one cluster
    initial = [pod(three, i).start() for i in range(3)]
    wait_ready(initial)
    assert_one_cluster(initial)
    assert_full_mesh(initial)
    write_through_each(initial, reader=initial[2])
    publish_across(initial[0], initial[2])

    # helm upgrade --set replicas=4: the existing pods' template is unchanged (no restart); the
    # fourth pod, rendered for replicas=4, joins the running cluster instead of forming its own
    four = render("replicas=4")
    assert one(four, "StatefulSet")["spec"]["template"] == statefulset["spec"]["template"]
    fourth = pod(four, 3).start()
    wait_ready([*initial, fourth])
    assert_one_cluster([*initial, fourth])
    assert_full_mesh([*initial, fourth])  # its routes list only the initial members: the rest is discovered
    write_through_each([fourth, initial[1]], reader=initial[0])
    publish_across(fourth, initial[1])

    # a restarted pod comes back as the same member with its volume: an initial member (its
    # static peers are only the first three) and the joiner (whose `join` finds it is a member)
    for restarted in (initial[0], fourth):
        restarted.stop()
        restarted.start()
        wait_ready([*initial, fourth])
        assert_one_cluster([*initial, fourth])
        assert_full_mesh([*initial, fourth])
    write_through_each([initial[0], fourth], reader=initial[1])

    # the preStop hook keeps members on restarts and uninstall, and removes a scaled-away pod
    api.replicas = 4
    kept = initial[1].pre_stop()
    assert kept.returncode == 0 and "staying a member" in kept.stdout, kept
    api.replicas = None  # helm uninstall: the StatefulSet is gone
    kept = fourth.pre_stop()
    assert kept.returncode == 0 and "staying a member" in kept.stdout, kept
    assert_one_cluster([*initial, fourth])

    api.replicas = 3  # helm upgrade --set replicas=3
    left = fourth.pre_stop()
    assert left.returncode == 0 and "removed from the cluster" in left.stdout, (left, fourth.output())
    fourth.stop()
    assert_one_cluster(initial)
    assert_full_mesh(initial)
    write_through_each(initial, reader=initial[0])
    assert api.requests and all(path == api.path for path in api.requests)


def test_a_pod_scaled_up_later_joins_a_cluster_whose_log_was_compacted(pod) -> None:
    """In production the log is always compacted before anyone scales up (every 5,000 entries)."""
    setting = "config.options.raft_snapshot_entries=10"
    initial = [pod(render(setting), i).start() for i in range(3)]
    wait_ready(initial)

    async def fill() -> None:
        nc = await connect(initial[0])
        box = await create(nc)
        for i in range(60):
            assert "msg_id" in await request(nc, f"$mq9.AI.MAILBOX.{box}", b"m%d" % i)
        await nc.close()

    run(fill())
    fourth = pod(render(setting, "replicas=4"), 3).start()
    wait_ready([*initial, fourth])
    assert_one_cluster([*initial, fourth])
    write_through_each([fourth], reader=initial[1])
