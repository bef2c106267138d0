"""Run a rendered StatefulSet's pods as local processes, the way the kubelet would start them.

The container's command, args and env are taken exactly as rendered; the kubelet's part is done
here: env values from the downward API, ``$(VAR)`` expansion in env, command and args, and
volumes. Where one loopback has to stand in for a pod network, the differences are explicit:

- every pod's stable DNS name with one of its ports (``<pod>.<headless>...:7222``, ``:6222``,
  ``:4222``) becomes ``127.0.0.1:<a free port of that pod for that port>``, wherever it appears;
- each mount path becomes a directory of that pod (the PVC one survives restarts);
- the listen ports, the same in every pod in Kubernetes, become that pod's free ports, through
  the environment (which beats the config file): ``MQ9_PORT``, ``MQ9_HTTP_PORT`` and
  ``MQ9_CLUSTER_ADDR`` (host 0.0.0.0 as rendered); the Raft one comes with its address above;
- ``KUBERNETES_SERVICE_HOST``/``PORT``, which Kubernetes puts in every container, point at a
  stand-in API server when the test has one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.broker import free_port

CLUSTER_DOMAIN = "cluster.local"
START_TIMEOUT = 10.0


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: names defined so far are replaced, ``$$`` escapes a ``$``."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        match = re.match(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", text[i:])
        if match and match.group(1) in env:
            out.append(env[match.group(1)])
            i += match.end()
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


# Listen ports the environment moves per pod: the container port's name -> (variable, value format)
LISTEN_OVERRIDES = {"nats": ("MQ9_PORT", "{port}"), "monitor": ("MQ9_HTTP_PORT", "{port}"),
                    "cluster": ("MQ9_CLUSTER_ADDR", "0.0.0.0:{port}")}


@dataclass
class PodNetwork:
    """The stand-in for the pod network: each pod's ports on loopback, by its DNS name."""

    statefulset: str
    headless: str
    namespace: str
    container_ports: dict[str, int]  # port name -> the port every pod listens on in Kubernetes
    assigned: dict[tuple[int, str], int] = field(default_factory=dict)  # (ordinal, name) -> loopback port

    def dns_name(self, ordinal: int) -> str:
        return f"{self.statefulset}-{ordinal}.{self.headless}.{self.namespace}.svc.{CLUSTER_DOMAIN}"

    def port(self, ordinal: int, name: str) -> int:
        """The loopback port that stands for the pod's port ``name``."""
        return self.assigned.setdefault((ordinal, name), free_port())

    def address(self, ordinal: int, name: str) -> str:
        return f"127.0.0.1:{self.port(ordinal, name)}"

    def substitute(self, text: str, ordinals: range) -> str:
        for ordinal in ordinals:
            for name, port in self.container_ports.items():
                text = text.replace(f"{self.dns_name(ordinal)}:{port}", self.address(ordinal, name))
        assert ".svc." not in text, f"a cluster DNS name this test cannot map is left in: {text}"
        return text


class LocalPod:
    """One pod of the rendered StatefulSet, run as a local process."""

    def __init__(self, docs: list[dict[str, Any]], ordinal: int, network: PodNetwork, workdir: Path,
                 api: tuple[str, int] | None = None) -> None:
        statefulset = next(d for d in docs if d["kind"] == "StatefulSet")
        self.spec = statefulset["spec"]["template"]["spec"]
        self.container = self.spec["containers"][0]
        self.configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
        self.ordinal = ordinal
        self.name = f"{statefulset['metadata']['name']}-{ordinal}"
        self.network = network
        self.ordinals = range(max(statefulset["spec"]["replicas"], ordinal + 1))  # the names it may know
        self.root = workdir / self.name
        self.api = api
        self.client_port = network.port(ordinal, "nats")
        self.http_port = network.port(ordinal, "monitor")
        self.log_path = self.root / "output.log"
        self.proc: subprocess.Popen | None = None
        self.mounts = self._mount_volumes()
        self.env = self._environment()

    # -- the kubelet's part ------------------------------------------------------------------------

    def _mount_volumes(self) -> dict[str, Path]:
        """mountPath -> the pod's directory for that volume, filled as Kubernetes would fill it.

        ConfigMap files are written as the pod sees them: with its mount paths and DNS names.
        The PVC's and the projected token's directories are kept across restarts.
        """
        volumes = {v["name"]: v for v in self.spec["volumes"]}
        mounts = {m["mountPath"]: self.root / "volumes" / m["name"] for m in self.container["volumeMounts"]}
        for mount in self.container["volumeMounts"]:
            path = mounts[mount["mountPath"]]
            path.mkdir(parents=True, exist_ok=True)
            volume = volumes.get(mount["name"], {})  # none: a volumeClaimTemplate
            if "configMap" in volume:
                for key, text in self.configmaps[volume["configMap"]["name"]].items():
                    (path / key).write_text(self.localize(text, mounts))
        return mounts

    def volume_dir(self, volume: str) -> Path:
        """This pod's directory for the named volume."""
        (mount,) = [m["mountPath"] for m in self.container["volumeMounts"] if m["name"] == volume]
        return self.mounts[mount]

    def localize(self, text: str, mounts: dict[str, Path] | None = None) -> str:
        """A text as this pod sees it here: mount paths and pod DNS names replaced."""
        mounts = mounts or self.mounts
        paths = "|".join(re.escape(path) for path in sorted(mounts, key=len, reverse=True))
        text = re.sub(f"(?:{paths})(?=[/\"\\s]|$)", lambda m: str(mounts[m.group(0)]), text)  # one pass
        return self.network.substitute(text, self.ordinals)

    def field_ref(self, path: str) -> str:
        return {"metadata.name": self.name, "metadata.namespace": self.network.namespace,
                "status.podIP": "127.0.0.1"}[path]

    def _environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for entry in self.container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = expand(str(entry["value"]), env)
            else:
                env[entry["name"]] = self.field_ref(entry["valueFrom"]["fieldRef"]["fieldPath"])
        self.rendered_env = dict(env)  # expanded, before any substitution (for the tests' checks)
        env = {name: self.localize(value) for name, value in env.items()}
        for name, (variable, value) in LISTEN_OVERRIDES.items():
            if name in self.network.container_ports:
                env[variable] = value.format(port=self.network.port(self.ordinal, name))
        if self.api is not None:
            env.update(KUBERNETES_SERVICE_HOST=self.api[0], KUBERNETES_SERVICE_PORT=str(self.api[1]))
        # The image's PATH: mq9cluster and python3 of the installed package.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return env

    def argv(self, words: list[str]) -> list[str]:
        return [self.localize(expand(word, self.rendered_env)) for word in words]

    # -- the process ------------------------------------------------------------------------------

    def start(self) -> "LocalPod":
        command = self.argv(self.container["command"] + self.container.get("args", []))
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(command, env=self.env, cwd=self.root, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.client_port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not listening after {START_TIMEOUT} s:\n{self.output()}")
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, as the kubelet sends after the preStop hook (SIGKILL after 10 s)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pre_stop(self) -> subprocess.CompletedProcess:
        """Run the rendered preStop hook in this pod, as the kubelet does before SIGTERM."""
        command = self.argv(self.container["lifecycle"]["preStop"]["exec"]["command"])
        return subprocess.run(command, env=self.env, cwd=self.root, capture_output=True, text=True, timeout=120)

    def probe(self, name: str) -> tuple[int, dict]:
        """The rendered ``name`` probe (an httpGet on a named port), against this pod."""
        http = self.container[name]["httpGet"]
        port = {"monitor": self.http_port, "nats": self.client_port}[http["port"]]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{http['path']}", timeout=3) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except OSError as exc:
            return 0, {"error": str(exc)}

    def http_json(self, path: str) -> dict:
        """A monitoring endpoint's JSON (``/raftz``, ``/routez``)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=3) as response:
            return json.loads(response.read())

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def raft_addr(self) -> str:
        return self.network.address(self.ordinal, "raft")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""
