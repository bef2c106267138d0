"""The chaos network on the real kernel: namespaces on a private bridge, partitions, teardown.

Needs root and iproute2/iptables (make chaos installs them); skipped otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading

import pytest

from chaos.net import Network, leftovers

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"),
                                reason="needs root, iproute2 and iptables")

PROBE = "import socket, sys; socket.create_connection((sys.argv[1], 8222), timeout=1).close()"


def reaches(net: Network, source: str, target: str) -> bool:
    """Whether a TCP connection from ``source``'s namespace to ``target``'s listener succeeds."""
    done = subprocess.run(["ip", "netns", "exec", net.node_ns[source], sys.executable, "-c", PROBE,
                           net.addresses[target]], capture_output=True, timeout=10)
    return done.returncode == 0


def test_nodes_talk_over_the_bridge_until_cut_and_everything_goes_at_teardown() -> None:
    with Network(["n1", "n2", "n3"]) as net:
        listeners = [subprocess.Popen(["ip", "netns", "exec", net.node_ns[name], sys.executable, "-m", "http.server",
                                       "--bind", net.addresses[name], "8222"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for name in ("n1", "n2", "n3")]
        try:
            for _ in range(50):
                if reaches(net, "n2", "n1") and reaches(net, "n1", "n3"):
                    break
            assert reaches(net, "n2", "n1") and reaches(net, "n3", "n1")
            net.partition(["n1"], ["n2", "n3"])
            assert not reaches(net, "n2", "n1") and not reaches(net, "n1", "n3")
            assert reaches(net, "n2", "n3")  # the majority side still talks
            net.heal()
            net.cut("n1", ["n2"], inbound=True, outbound=False)  # one way: n1 no longer hears n2
            assert not reaches(net, "n2", "n1") and reaches(net, "n1", "n3")
            net.heal()

            seen: list[bool] = []

            def from_client_ns() -> None:  # the workload's thread: sockets start in the client namespace
                net.enter_client_ns()
                import socket

                try:
                    socket.create_connection((net.addresses["n1"], 8222), timeout=2).close()
                    seen.append(True)
                finally:
                    net.leave_client_ns()

            thread = threading.Thread(target=from_client_ns)
            thread.start()
            thread.join()
            assert seen == [True]
        finally:
            for listener in listeners:
                listener.kill()
                listener.wait()
        tag = net.tag
    assert not [ns for ns in leftovers() if ns.startswith(f"mq9c{tag}-")]
