"""Isolated networks for chaos runs: one network namespace per node and one for the clients.

Every namespace of a run is named ``mq9c<tag>-<role>``. The nodes' and the client's ``eth0``
are veth pairs onto a bridge that lives in the run's own bridge namespace, so nothing is
attached to the root namespace and no packet can leave the machine. Addresses are in
127.99.0.0/24 (loopback range, as the project's network rules require): each namespace keeps
only 127.0.0.1/32 on ``lo`` (not the usual /8, which would make every 127.x address local) and
allows 127/8 on ``eth0`` with ``route_localnet``.

Faults on the network are iptables rules inside node namespaces (the nft backend): a partition
drops the peers' Raft and client traffic in both directions, or only inbound for a one-way cut.
Clients are never cut off from their node: a minority must refuse them, not be hidden.

``Network`` is a context manager and registers ``atexit`` teardown; ``cleanup(prefix)`` deletes
whatever an earlier, killed run left behind.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import secrets
import subprocess
from collections.abc import Iterable, Sequence

log = logging.getLogger("chaos.net")

PREFIX = "mq9c"
SUBNET = "127.99.0"
CLIENT_ADDRESS = f"{SUBNET}.100"
_CLONE_NEWNET = 0x40000000


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command quietly; raise with its output if it fails and ``check``."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def in_ns(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return run("ip", "netns", "exec", ns, *argv, check=check)


def node_address(index: int) -> str:
    """The address of node ``index`` (1-based)."""
    return f"{SUBNET}.{10 + index}"


class Network:
    """A bridge namespace, ``size`` node namespaces and a client namespace, torn down on exit."""

    def __init__(self, names: Sequence[str], tag: str | None = None) -> None:
        self.tag = tag or secrets.token_hex(2)
        self.names = list(names)
        self.bridge_ns = f"{PREFIX}{self.tag}-br"
        self.client_ns = f"{PREFIX}{self.tag}-cl"
        self.node_ns = {name: f"{PREFIX}{self.tag}-{name}" for name in self.names}
        self.addresses = {name: node_address(i + 1) for i, name in enumerate(self.names)}
        self._created: list[str] = []
        self._home_fd: int | None = None

    # -- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> Network:
        atexit.register(self.teardown)
        try:
            self._add_ns(self.bridge_ns)
            in_ns(self.bridge_ns, "ip", "link", "add", "br0", "type", "bridge")
            in_ns(self.bridge_ns, "ip", "link", "set", "br0", "up")
            in_ns(self.bridge_ns, "ip", "link", "set", "lo", "up")
            for name, address in self.addresses.items():
                self._attach(self.node_ns[name], f"v-{name}", address)
            self._attach(self.client_ns, "v-client", CLIENT_ADDRESS)
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def _add_ns(self, ns: str) -> None:
        run("ip", "netns", "add", ns)
        self._created.append(ns)

    def add_node(self, name: str) -> str:
        """A namespace and address for a node that joins later; its address."""
        index = len(self.names) + 1
        self.names.append(name)
        self.node_ns[name] = f"{PREFIX}{self.tag}-{name}"
        self.addresses[name] = node_address(index)
        self._attach(self.node_ns[name], f"v-{name}", self.addresses[name])
        return self.addresses[name]

    def _attach(self, ns: str, host_end: str, address: str) -> None:
        self._add_ns(ns)
        in_ns(self.bridge_ns, "ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        in_ns(self.bridge_ns, "ip", "link", "set", host_end, "master", "br0", "up")
        for key in ("all", "lo", "eth0", "default"):
            in_ns(ns, "sysctl", "-qw", f"net.ipv4.conf.{key}.route_localnet=1")
        in_ns(ns, "ip", "link", "set", "lo", "up")
        in_ns(ns, "ip", "addr", "del", "127.0.0.1/8", "dev", "lo", check=False)
        in_ns(ns, "ip", "addr", "add", "127.0.0.1/32", "dev", "lo")
        in_ns(ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        in_ns(ns, "ip", "link", "set", "eth0", "up")

    def teardown(self) -> None:
        """Delete every namespace this run created (their veths go with them). Idempotent."""
        self.leave_client_ns()
        while self._created:
            ns = self._created.pop()
            run("ip", "netns", "del", ns, check=False)
        atexit.unregister(self.teardown)

    # -- the calling thread's namespace ------------------------------------------------------

    def enter_client_ns(self) -> None:
        """Move the calling thread (and threads it starts later) into the client namespace.

        Sockets belong to the namespace of the thread that creates them, so every connection the
        workload opens from here on starts in the client namespace.
        """
        if self._home_fd is None:
            self._home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        _setns(f"/run/netns/{self.client_ns}")

    def leave_client_ns(self) -> None:
        if self._home_fd is not None:
            _setns_fd(self._home_fd)
            os.close(self._home_fd)
            self._home_fd = None

    # -- faults ------------------------------------------------------------------------------

    def cut(self, node: str, peers: Iterable[str], inbound: bool = True, outbound: bool = True) -> None:
        """Drop traffic between ``node`` and each of ``peers`` (both ways, or one)."""
        ns = self.node_ns[node]
        for peer in peers:
            if inbound:
                in_ns(ns, "iptables", "-w", "-A", "INPUT", "-s", self.addresses[peer], "-j", "DROP")
            if outbound:
                in_ns(ns, "iptables", "-w", "-A", "OUTPUT", "-d", self.addresses[peer], "-j", "DROP")

    def partition(self, *sides: Iterable[str]) -> None:
        """Nodes on different sides stop hearing each other; nodes on one side still do."""
        groups = [list(side) for side in sides]
        for i, side in enumerate(groups):
            others = [peer for j, other in enumerate(groups) if j != i for peer in other]
            for node in side:
                self.cut(node, others)

    def heal(self, nodes: Iterable[str] | None = None) -> None:
        """Remove every drop rule (of ``nodes``, default all)."""
        for node in nodes if nodes is not None else self.names:
            in_ns(self.node_ns[node], "iptables", "-w", "-F", "INPUT")
            in_ns(self.node_ns[node], "iptables", "-w", "-F", "OUTPUT")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6", use_errno=True)


def _setns_fd(fd: int) -> None:
    if _libc().setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        _setns_fd(fd)
    finally:
        os.close(fd)


def leftovers(prefix: str = PREFIX) -> list[str]:
    """Namespaces whose names start with ``prefix`` (of this and earlier runs)."""
    listing = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in listing.splitlines() if line.startswith(prefix)]


def cleanup(prefix: str = PREFIX) -> list[str]:
    """Delete every namespace named ``prefix*``: what killed runs left behind. Returns their names."""
    names = leftovers(prefix)
    for ns in names:
        pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        run("ip", "netns", "del", ns, check=False)
    return names
