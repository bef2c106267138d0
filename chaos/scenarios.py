"""Named fault scenarios: what the nemesis does to the cluster while the workload runs.

A scenario's ``nemesis`` gets a ``Context`` (the cluster, a random generator seeded from the
run's seed, and the time left) and applies faults until the time is up; the runner then heals
everything, lets the workload finish and reads the final state. Schedules are drawn from the
seed alone, so one seed gives one sequence of fault kinds and targets (their exact timing still
depends on the machine).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from chaos import corrupt
from chaos.cluster import ChaosCluster
from chaos.workload import WorkloadConfig


@dataclass
class Context:
    cluster: ChaosCluster
    rng: random.Random
    deadline: float  # time.monotonic() at which faults stop

    def left(self) -> float:
        return self.deadline - time.monotonic()

    async def hold(self, low: float, high: float) -> bool:
        """Sleep a random while (cut short by the deadline); True if there is time for more."""
        await asyncio.sleep(max(0.0, min(self.rng.uniform(low, high), self.left())))
        return self.left() > 0

    def others(self, name: str) -> list[str]:
        return [n for n in self.cluster.members if n != name]

    async def leader(self) -> str:
        return await self.cluster.leader() or self.rng.choice(self.cluster.up() or self.cluster.members)


Nemesis = Callable[[Context], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    nemesis: Nemesis
    doc: str
    nodes: int = 3
    duration: float = 40.0  # seconds of faults (the run takes longer: set-up, heal, final reads)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    # A snapshot every 1,000 entries (about every 10 s of this workload): the log is compacted
    # several times a run, so restarted, rebuilt and lagging nodes catch up from snapshots.
    extra_args: tuple[str, ...] = ("--raft-snapshot-entries", "1000")
    power: bool = False  # data dirs on the power-loss filesystem
    clock: bool = False  # wall clocks through the clock shim (clockshim/)
    soak: bool = True  # drawn by make soak


# -- nemeses -------------------------------------------------------------------------------------


async def kill_leader(ctx: Context) -> None:
    while await ctx.hold(3, 6):
        victim = await ctx.leader()
        await ctx.cluster.kill([victim])
        await ctx.hold(2, 5)
        await ctx.cluster.start([victim])


async def kill_random_minority(ctx: Context) -> None:
    while await ctx.hold(2, 5):
        members = ctx.cluster.members
        victims = ctx.rng.sample(members, ctx.rng.randint(1, (len(members) - 1) // 2))
        await ctx.cluster.kill(victims)
        await ctx.hold(2, 6)
        await ctx.cluster.start(victims)


async def kill_all_staggered(ctx: Context) -> None:
    """Every node at once; back one by one, the one that had applied least last."""
    while await ctx.hold(4, 8):
        views = await ctx.cluster.views()
        order = sorted(ctx.cluster.members, key=lambda n: -((views.get(n) or {}).get("last_applied", 0)))
        await ctx.cluster.kill(ctx.cluster.members)
        await ctx.hold(1, 3)
        for name in order:
            await ctx.cluster.start([name])
            await asyncio.sleep(ctx.rng.uniform(0.5, 2.0))


async def pause_leader(ctx: Context) -> None:
    while await ctx.hold(3, 6):
        victim = await ctx.leader()
        await ctx.cluster.pause([victim])
        await ctx.hold(2, 6)
        await ctx.cluster.resume([victim])


async def pause_random(ctx: Context) -> None:
    while await ctx.hold(2, 4):
        victims = ctx.rng.sample(ctx.cluster.members, ctx.rng.randint(1, len(ctx.cluster.members)))
        await ctx.cluster.pause(victims)
        await ctx.hold(1, 4)
        await ctx.cluster.resume(victims)


async def partition_leader(ctx: Context) -> None:
    while await ctx.hold(3, 6):
        victim = await ctx.leader()
        await ctx.cluster.partition([victim], ctx.others(victim))
        await ctx.hold(3, 7)
        await ctx.cluster.heal()


async def partition_random_halves(ctx: Context) -> None:
    while await ctx.hold(2, 5):
        members = list(ctx.cluster.members)
        ctx.rng.shuffle(members)
        cut = ctx.rng.randint(1, len(members) // 2)
        await ctx.cluster.partition(members[:cut], members[cut:])
        await ctx.hold(3, 7)
        await ctx.cluster.heal()


async def partition_one_way(ctx: Context) -> None:
    """The leader stops hearing its followers but still reaches them (and the reverse)."""
    while await ctx.hold(3, 6):
        leader = await ctx.leader()
        if ctx.rng.random() < 0.5:
            await ctx.cluster.cut_one_way(leader, ctx.others(leader))
        else:
            for other in ctx.others(leader):
                await ctx.cluster.cut_one_way(other, [leader])
        await ctx.hold(3, 6)
        await ctx.cluster.heal()


async def partition_bridge(ctx: Context) -> None:
    """Two halves that cannot hear each other, and one node that hears both."""
    while await ctx.hold(3, 6):
        members = list(ctx.cluster.members)
        ctx.rng.shuffle(members)
        bridge, rest = members[0], members[1:]
        left, right = rest[: len(rest) // 2], rest[len(rest) // 2:]
        ctx.cluster.rec.fault("bridge", {"bridge": bridge, "sides": [left, right]})
        for a in left:
            await asyncio.to_thread(ctx.cluster.net.cut, a, right)
        for b in right:
            await asyncio.to_thread(ctx.cluster.net.cut, b, left)
        await ctx.hold(3, 7)
        await ctx.cluster.heal()


async def flapping(ctx: Context) -> None:
    """The leader's links go down and up every fraction of a second, for a few seconds at a time."""
    while await ctx.hold(3, 5):
        victim = await ctx.leader()
        end = time.monotonic() + ctx.rng.uniform(3, 6)
        while time.monotonic() < end and ctx.left() > 0:
            await ctx.cluster.partition([victim], ctx.others(victim))
            await asyncio.sleep(ctx.rng.uniform(0.1, 0.6))
            await ctx.cluster.heal()
            await asyncio.sleep(ctx.rng.uniform(0.1, 0.6))


async def power_loss_one(ctx: Context) -> None:
    """One node at a time (often the leader) loses power; it comes back with only what it fsynced."""
    while await ctx.hold(3, 6):
        victim = await ctx.leader() if ctx.rng.random() < 0.5 else ctx.rng.choice(ctx.cluster.members)
        await ctx.cluster.power_off([victim])
        await ctx.hold(1, 4)
        await ctx.cluster.start([victim])


async def power_loss_all(ctx: Context) -> None:
    """Coordinated power loss: every node at once, back in a random order."""
    while await ctx.hold(4, 8):
        await ctx.cluster.power_off(ctx.cluster.members)
        await ctx.hold(1, 3)
        order = list(ctx.cluster.members)
        ctx.rng.shuffle(order)
        for name in order:
            await ctx.cluster.start([name])
            await asyncio.sleep(ctx.rng.uniform(0.2, 1.5))


async def power_loss_then_pause_or_partition(ctx: Context) -> None:
    """One node's power loss followed by pauses or partitions of others (Jepsen's split-brain recipe)."""
    while await ctx.hold(3, 5):
        victim = ctx.rng.choice(ctx.cluster.members)
        await ctx.cluster.power_off([victim])
        await ctx.hold(0.5, 2)
        await ctx.cluster.start([victim])
        await ctx.hold(0.2, 1.5)
        other = ctx.rng.choice(ctx.others(victim))
        if ctx.rng.random() < 0.5:
            await ctx.cluster.pause([other])
            await ctx.hold(2, 5)
            await ctx.cluster.resume([other])
        else:
            await ctx.cluster.partition([other], ctx.others(other))
            await ctx.hold(2, 5)
            await ctx.cluster.heal()


async def corrupt_minority(ctx: Context) -> None:
    """Damage files of one fixed minority only (Jepsen's model): see ``corrupt_nodes``."""
    members = list(ctx.cluster.members)
    await corrupt_nodes(ctx, ctx.rng.sample(members, (len(members) - 1) // 2))


async def corrupt_roaming(ctx: Context) -> None:
    """Damage files of any node, one at a time: damage a node did not notice stays, so over a
    run it can sit on more than a minority (bit rot spread over a cluster's life)."""
    await corrupt_nodes(ctx, list(ctx.cluster.members))


async def corrupt_nodes(ctx: Context, victims: list[str]) -> None:
    """Stop one of ``victims``, damage one of its files, start it. A node that finds the damage must
    rebuild itself from its peers (see ``ChaosCluster.await_rebuild``); one that starts must serve
    what the others serve."""
    older: dict[str, Path] = {}
    while await ctx.hold(3, 6):
        victim = ctx.rng.choice(victims)
        node = ctx.cluster.nodes[victim]
        await ctx.cluster.kill([victim])
        kinds = [kind for kind in sorted(corrupt.KINDS) if corrupt.files_of(node.data_dir, kind)]
        modes = [mode for mode in corrupt.MODES if mode != "rollback" or victim in older]
        kind, mode = ctx.rng.choice(kinds), ctx.rng.choice(modes)
        copy = node.home / "older"
        done = await asyncio.to_thread(corrupt.damage, node.data_dir, kind, mode, ctx.rng, older.get(victim))
        await asyncio.to_thread(corrupt.keep_copy, node.data_dir, copy)
        older[victim] = copy
        ctx.cluster.rec.fault("corrupt", {"nodes": [victim], "kind": kind, "mode": mode, "done": done})
        await ctx.cluster.start([victim])
        await asyncio.sleep(1.5)  # damage found by the tick thread (a snapshot) comes just after it listens
        await ctx.cluster.await_rebuild(victim)


CLOCK_FAULTS = ("+10m", "-10m", "+2h", "-1h", "+0 x3", "+0 x0,3", "+30 x2")


async def clock_skew(ctx: Context) -> None:
    """One node's wall clock jumps or runs fast or slow (the leader's, half of the time)."""
    while await ctx.hold(2, 5):
        victim = await ctx.leader() if ctx.rng.random() < 0.5 else ctx.rng.choice(ctx.cluster.members)
        await ctx.cluster.skew_clock(victim, ctx.rng.choice(CLOCK_FAULTS))
        await ctx.hold(4, 8)
        await ctx.cluster.skew_clock(victim, "+0 x1")
        if ctx.rng.random() < 0.5:  # and a leader change while it is off
            leader = await ctx.leader()
            await ctx.cluster.kill([leader])
            await ctx.hold(1, 3)
            await ctx.cluster.start([leader])


async def membership_under_faults(ctx: Context) -> None:
    """A member leaves, is wiped and joins again while another member is paused or cut off."""
    while await ctx.hold(3, 6):
        victim = ctx.rng.choice(ctx.cluster.members)
        other = ctx.rng.choice(ctx.others(victim))
        fault = ctx.rng.choice(["pause", "partition", "kill", "none"])
        if fault == "pause":
            await ctx.cluster.pause([other])
        elif fault == "partition":
            await ctx.cluster.partition([other], ctx.others(other))
        elif fault == "kill":
            await ctx.cluster.kill([other])
        rebuilding = asyncio.ensure_future(ctx.cluster.rebuild(victim))
        await ctx.hold(1, 4)
        if fault == "pause":
            await ctx.cluster.resume([other])
        elif fault == "partition":
            await ctx.cluster.heal()
        elif fault == "kill":
            await ctx.cluster.start([other])
        await rebuilding


async def mixed(ctx: Context) -> None:
    """A random fault at a time, drawn from all of the above."""
    kinds = [kill_leader, kill_random_minority, pause_leader, partition_leader, partition_random_halves,
             partition_one_way]
    while ctx.left() > 0:
        one = ctx.rng.choice(kinds)
        sub = Context(ctx.cluster, ctx.rng, min(ctx.deadline, time.monotonic() + ctx.rng.uniform(8, 15)))
        await one(sub)
        await ctx.cluster.heal_everything()


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("kill-leader", kill_leader, "kill -9 the leader, restart it a few seconds later, again and again"),
    Scenario("kill-minority", kill_random_minority, "kill -9 a random minority, restart it"),
    Scenario("kill-all", kill_all_staggered, "kill -9 every node, restart them staggered, stalest last"),
    Scenario("pause-leader", pause_leader, "SIGSTOP the leader for seconds, SIGCONT"),
    Scenario("pause-random", pause_random, "SIGSTOP random nodes (up to all), SIGCONT"),
    Scenario("partition-leader", partition_leader, "isolate the leader from every peer, heal"),
    Scenario("partition-halves", partition_random_halves, "random majority/minority partitions"),
    Scenario("partition-one-way", partition_one_way, "one-way cuts between the leader and the followers"),
    Scenario("partition-bridge", partition_bridge, "two halves joined only through one node (5 nodes)", nodes=5),
    Scenario("flapping", flapping, "the leader's links flap every fraction of a second"),
    Scenario("power-loss-one", power_loss_one, "one node loses power (unsynced writes gone), restarts",
             power=True),
    Scenario("power-loss-all", power_loss_all, "every node loses power at once, restarts in random order",
             power=True),
    Scenario("power-loss-split", power_loss_then_pause_or_partition,
             "one node's power loss, then a pause or partition of another", power=True),
    Scenario("corrupt-minority", corrupt_minority,
             "stop a node of a fixed minority, bit-flip/truncate/roll back one of its files (journal, metadata, "
             "snapshot, RocksDB SST/WAL/MANIFEST), restart; a node that finds it must rebuild itself from its peers"),
    Scenario("corrupt-roaming", corrupt_roaming,
             "corrupt-minority on any node, one at a time: unnoticed damage can pile up past a minority"),
    Scenario("clock-skew", clock_skew, "one node's wall clock off by minutes to hours, or 0.3x-3x fast (clock shim)",
             clock=True),
    Scenario("membership", membership_under_faults,
             "leave + wipe + join of one member while another is paused, cut off or killed"),
    Scenario("kill-minority-5", kill_random_minority, "kill -9 up to two of five nodes, restart", nodes=5),
    Scenario("partition-halves-5", partition_random_halves, "majority/minority partitions of five nodes", nodes=5),
    Scenario("mixed", mixed, "random mix of kills, pauses and partitions", duration=60.0),
    Scenario("mixed-5", mixed, "random mix of kills, pauses and partitions on five nodes", nodes=5, duration=60.0),
]}

# The CI subset: fixed seeds, about a minute each, gating.
# clock-skew seed 3 puts the leader's clock 2 h ahead within seconds (it lost 78 acknowledged
# messages before the cluster clock).
CI = [("kill-leader", 1), ("pause-leader", 2), ("partition-leader", 3), ("kill-all", 4), ("power-loss-one", 5),
      ("corrupt-minority", 6), ("clock-skew", 3), ("corrupt-roaming", 3)]
