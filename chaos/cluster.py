"""A chaos cluster: the network, the node processes and the faults applied to them, recorded.

Every fault goes through a method here so that it lands in the history with its time and
nodes (the checker reads pauses, partitions and leader losses from there). The methods are
async and are called from the scenario's nemesis on the run's event loop, in the client
namespace; commands that act inside node namespaces go through ``ip netns exec``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from chaos.history import Recorder
from chaos.net import Network
from chaos.nodes import Node, broker_command

log = logging.getLogger("chaos.cluster")

START_TIMEOUT = 20.0
DAMAGE_LINE = re.compile(r"this node's data is damaged: (.*)")  # mq9cluster/app.py's words
REBUILT_LINE = re.compile(r"rebuilt from peers in ([0-9.]+) s")


def admin_command(*args: str) -> subprocess.CompletedProcess:
    """``mq9cluster ARGS`` from the client namespace (it reaches every member's Raft port)."""
    return subprocess.run([*broker_command(), *args], capture_output=True, text=True, timeout=60)


def share_mounts(path: Path) -> Path:
    """Make ``path`` a shared mount, so that filesystems mounted below it later propagate.

    ``ip netns exec`` gives each node a copy of the mount namespace (slave of the original). With
    a private root, as here, a copy would keep its own reference to every FUSE mount that existed
    when it was made, and unmounting one in our namespace would never end its daemon.
    """
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True, capture_output=True)
    subprocess.run(["mount", "--make-shared", str(path)], check=True, capture_output=True)
    return path


class ChaosCluster:
    """``size`` nodes, one per namespace of ``net``, data under ``run_dir``."""

    def __init__(self, net: Network, run_dir: Path, recorder: Recorder, extra_args: list[str] | None = None,
                 power: bool = False, clock: bool = False) -> None:
        self.net = net
        self.run_dir = run_dir
        self.rec = recorder
        self.nodes: dict[str, Node] = {
            name: Node(name, net.node_ns[name], net.addresses[name], run_dir / "nodes" / name, list(extra_args or []),
                       power=power, clock=clock)
            for name in net.names
        }
        self.members = list(self.nodes)  # Raft members (changes with leave/join)
        self.shared_mount: Path | None = None
        if power:
            self.shared_mount = share_mounts(run_dir / "nodes")
        self.recoveries: list[asyncio.Task] = []
        self.exits: dict[str, str] = {}  # node -> why it exited on its own

    # -- views -------------------------------------------------------------------------------

    @property
    def peers(self) -> list[str]:
        return [self.nodes[name].raft_addr for name in self.members]

    @property
    def routes(self) -> list[str]:
        return [self.nodes[name].route_addr for name in self.members]

    def urls(self) -> dict[str, str]:
        return {name: self.nodes[name].url for name in self.members}

    def up(self) -> list[str]:
        return [name for name in self.members if self.nodes[name].running and not self.nodes[name].paused]

    async def views(self) -> dict[str, dict | None]:
        names = self.up()
        found = await asyncio.gather(*(self.nodes[name].raftz() for name in names))
        return dict(zip(names, found))

    async def leader(self) -> str | None:
        """The node that leads in the highest term any running node reports, if any."""
        best: tuple[int, str] | None = None
        for name, view in (await self.views()).items():
            if view and view["role"] == "leader" and (best is None or view["term"] > best[0]):
                best = (view["term"], name)
        return None if best is None else best[1]

    async def wait_leader(self, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            views = await self.views()
            leaders = {view["leader"] for view in views.values() if view}
            if len(leaders) == 1 and None not in leaders and all(views.values()):
                (address,) = leaders
                for name in self.members:
                    if self.nodes[name].raft_addr == address:
                        return name
            if time.monotonic() > deadline:
                raise RuntimeError(f"no agreed leader after {timeout} s: {views}")
            await asyncio.sleep(0.1)

    def note_exits(self) -> None:
        """Record nodes whose process ended by itself since the last look (not a fault of ours)."""
        for name, node in self.nodes.items():
            rc = node.exited()
            if rc is not None:
                self.exits.setdefault(name, f"exited with {rc}: {node.log_tail(600)}")
                self.rec.fault("exited", {"nodes": [name], "rc": rc}, node=name)

    async def wait_listening(self, name: str, timeout: float = START_TIMEOUT) -> bool:
        """Until the node answers /healthz; False if its process exited first."""
        node = self.nodes[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = node.exited()
            if rc is not None:
                self.exits[name] = f"exited with {rc}: {node.log_tail(600)}"
                self.rec.fault("exited", {"nodes": [name], "rc": rc}, node=name)
                return False
            if await node.http_json("/healthz", timeout=0.5) is not None:
                return True
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{name} did not listen within {timeout} s:\n{node.log_tail()}")

    # -- life cycle ----------------------------------------------------------------------------

    async def start_all(self) -> None:
        for name in self.members:
            self.nodes[name].spawn(self.peers, self.routes)
        for name in self.members:
            await self.wait_listening(name)
        await self.wait_leader()

    def stop_all(self) -> None:
        """Stop every node and unmount its filesystem; one that fails does not spare the others."""
        errors = []
        for node in self.nodes.values():
            node.stop()
        for node in self.nodes.values():
            try:
                node.unmount(power_lost=False)
            except RuntimeError as exc:
                errors.append(exc)
        if self.shared_mount is not None:
            subprocess.run(["umount", "-R", str(self.shared_mount)], check=False, capture_output=True)
            self.shared_mount = None
        if errors:
            raise errors[0]

    # -- faults --------------------------------------------------------------------------------

    async def _majority_left(self, lost: Iterable[str]) -> tuple[bool, bool]:
        """(the leader is among ``lost``, a majority of members stays up)."""
        lost = set(lost)
        leader = await self.leader()
        remaining = [name for name in self.up() if name not in lost]
        return leader in lost, 2 * len(remaining) > len(self.members)

    async def _take_down(self, f: str, names: Iterable[str], act: Callable[[Node], None]) -> list[str]:
        """Record fault ``f`` (and whether it loses the leader while a majority stays up), then act."""
        names = list(names)
        leader_lost, majority = await self._majority_left(names)
        self.rec.fault(f, {"nodes": names, "leader_loss": leader_lost and majority})
        for name in names:
            act(self.nodes[name])
        return names

    async def kill(self, names: Iterable[str]) -> None:
        await self._take_down("kill", names, Node.kill)

    async def power_off(self, names: Iterable[str]) -> None:
        """Power loss: kill -9, and each node's disk forgets what was not fsynced."""
        names = await self._take_down("power-off", names, Node.kill)
        await asyncio.gather(*(asyncio.to_thread(self.nodes[name].unmount, True) for name in names))

    async def start(self, names: Iterable[str], measure: bool = True) -> None:
        """Start stopped nodes; measure how long each takes to catch up (in the background)."""
        names = [name for name in names if not self.nodes[name].running]
        self.note_exits()
        self.rec.fault("start", {"nodes": names})
        for name in names:
            self.nodes[name].spawn(self.peers, self.routes)
        for name in names:
            if await self.wait_listening(name) and measure:
                self.recoveries.append(asyncio.ensure_future(self._measure_recovery(name, time.monotonic())))

    async def pause(self, names: Iterable[str]) -> None:
        await self._take_down("pause", names, Node.pause)

    async def resume(self, names: Iterable[str]) -> None:
        names = [name for name in names if self.nodes[name].paused]
        self.rec.fault("resume", {"nodes": names})
        for name in names:
            self.nodes[name].resume()
        for name in names:
            self.recoveries.append(asyncio.ensure_future(self._measure_recovery(name, time.monotonic())))

    async def partition(self, *sides: list[str]) -> None:
        leader = await self.leader()
        biggest = max(sides, key=len)
        leader_loss = 2 * len(biggest) > len(self.members) and leader is not None and leader not in biggest
        await asyncio.to_thread(self.net.partition, *sides)
        # recorded once every rule is in place: an operation invoked later cannot cross the cut
        self.rec.fault("partition", {"sides": [list(side) for side in sides], "leader_loss": leader_loss})

    async def cut_one_way(self, node: str, deaf_to: list[str]) -> None:
        """``node`` stops receiving from ``deaf_to`` (it can still send to them)."""
        await asyncio.to_thread(self.net.cut, node, deaf_to, True, False)
        self.rec.fault("cut", {"nodes": [node], "deaf_to": deaf_to})

    async def heal(self) -> None:
        self.rec.fault("heal", {})
        await asyncio.to_thread(self.net.heal, self.members)
        for name in self.up():
            self.recoveries.append(asyncio.ensure_future(self._measure_recovery(name, time.monotonic())))

    async def skew_clock(self, name: str, spec: str) -> None:
        """Offset and/or rate of one node's wall clock (``+10m``, ``+0 x3``; ``+0 x1`` is true time)."""
        self.nodes[name].set_clock(spec)
        self.rec.fault("clock", {"nodes": [name], "spec": spec})

    async def rebuild(self, name: str) -> None:
        """The operator's answer to a node that refuses its data: leave, wipe, join again."""
        node = self.nodes[name]
        node.kill()
        deadline = time.monotonic() + 60
        while True:  # wiping a node that is still a member would be the operator's data loss
            leader = await self.leader()
            seed = self.nodes[leader if leader and leader != name else
                              next(n for n in self.members if n != name)].raft_addr
            left = await asyncio.to_thread(admin_command, "leave", "--raft-addr", node.raft_addr, "--seed", seed)
            self.rec.fault("leave", {"nodes": [name], "seed": seed, "rc": left.returncode,
                                     "out": (left.stdout + left.stderr)[-300:]})
            if left.returncode == 0:
                break  # removed, or found removed by an earlier try whose outcome was unknown (exit 3)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} could not leave the cluster: {left.stderr[-300:]}")
            await asyncio.sleep(1.0)
        await asyncio.to_thread(shutil.rmtree, node.data_dir, True)
        self.rec.fault("wipe", {"nodes": [name]})
        self.rec.fault("join", {"nodes": [name], "seed": seed})
        node.spawn(self.peers, self.routes, seed=seed)
        if await self.wait_listening(name):
            self.recoveries.append(asyncio.ensure_future(self._measure_recovery(name, time.monotonic())))

    async def await_rebuild(self, name: str, timeout: float = 90.0) -> None:
        """A node restarted on damaged files: if its log says it found damage, record that
        (``refused``: detected) and wait until ``/healthz`` says it has rebuilt itself from its
        peers (``rebuilt``; a fast rebuild may be over already). A node that refuses to rebuild,
        stops, or takes longer than ``timeout`` breaks the run."""
        node = self.nodes[name]
        found = DAMAGE_LINE.search(node.log_since_start())
        if found is None:
            return
        self.rec.fault("refused", {"nodes": [name], "why": found.group(1)[-400:]})
        since = time.monotonic()
        while (health := await node.http_json("/healthz")) is None or health.get("status") != "ok":
            self.note_exits()
            if not node.running or (health or {}).get("status") == "damaged" or time.monotonic() - since > timeout:
                raise RuntimeError(f"{name} did not rebuild itself: {health}; {node.log_tail(600)}")
            await asyncio.sleep(0.1)
        took = REBUILT_LINE.search(node.log_since_start())
        self.rec.fault("rebuilt", {"nodes": [name], "seconds": float(took.group(1)) if took else None})

    async def _measure_recovery(self, name: str, since: float, timeout: float = 60.0) -> None:
        """Record when ``name`` has applied what the leader had committed when it came back."""
        target = None
        while time.monotonic() - since < timeout:
            if target is None:
                leader = await self.leader()
                view = await self.nodes[leader].raftz() if leader else None
                target = view["commit_index"] if view else None
            else:
                view = await self.nodes[name].raftz()
                if view and view["leader"] and view["last_applied"] >= target:
                    self.rec.fault("recovered", {"node": name, "seconds": round(time.monotonic() - since, 2)}, name)
                    return
            await asyncio.sleep(0.1)
        self.rec.fault("recovered", {"node": name, "seconds": None}, name)

    async def heal_everything(self, timeout: float = 60.0) -> None:
        """Heal the network, resume and start every member, wait until all applied the same index."""
        await self.heal()
        for name, node in self.nodes.items():
            if node.clock and node.clock_file.read_text().strip() != "+0 x1":
                await self.skew_clock(name, "+0 x1")
        await self.resume([n for n in self.members if self.nodes[n].paused])
        self.note_exits()
        await self.start([n for n in self.members if not self.nodes[n].running])
        leader = await self.wait_leader(timeout)
        target = (await self.nodes[leader].raftz() or {}).get("commit_index", 0)
        deadline = time.monotonic() + timeout
        while True:
            views = await self.views()
            if all(view and view["last_applied"] >= target for view in views.values()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes did not catch up to {target} within {timeout} s: {views}")
            await asyncio.sleep(0.1)
        await asyncio.gather(*self.recoveries, return_exceptions=True)
