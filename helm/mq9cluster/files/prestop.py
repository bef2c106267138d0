"""preStop hook of every mq9cluster pod: leave the Raft cluster when this pod is scaled away.

A pod also stops for restarts, rolling upgrades, evictions and node drains, and must stay a member
then. So it leaves only when its ordinal is no longer below the StatefulSet's desired replicas,
read from the Kubernetes API with the pod's service account token. In doubt it stays: when the
API does not answer, and when the StatefulSet is gone (helm uninstall takes the whole cluster).
Standard library only: it runs with the broker image's Python.

Usage: python3 prestop.py SERVICEACCOUNT_DIR   (token, ca.crt and namespace, as Kubernetes mounts them)
Environment: POD_NAME, MQ9_RAFT_ADDR, BOOT_LEAVE_WAIT (seconds to retry the leave),
KUBERNETES_SERVICE_HOST/PORT (set by Kubernetes in every container).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def say(text: str) -> None:
    print(f"prestop: {text}", flush=True)


def desired_replicas(account: Path, statefulset: str) -> int | None:
    """The StatefulSet's spec.replicas, or None when it no longer exists."""
    namespace = (account / "namespace").read_text().strip()
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    host = f"[{host}]" if ":" in host else host
    url = (f"https://{host}:{os.environ['KUBERNETES_SERVICE_PORT']}"
           f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{statefulset}")
    request = urllib.request.Request(url, headers={
        "Authorization": f"Bearer {(account / 'token').read_text().strip()}",
        "Accept": "application/json",
    })
    context = ssl.create_default_context(cafile=str(account / "ca.crt"))
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return int(json.load(response)["spec"]["replicas"])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def leave(member: str, wait: float) -> bool:
    """`mq9cluster leave` this member, retrying (another member may be leaving at the same time)."""
    deadline = time.monotonic() + wait
    while True:
        done = subprocess.run(["mq9cluster", "leave", "--raft-addr", member],
                              capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            say(done.stdout.strip())
            return True
        if time.monotonic() >= deadline:
            say(f"leave failed, giving up: {done.stderr.strip()}")
            return False
        say(f"leave failed, retrying: {done.stderr.strip()}")
        time.sleep(1.0)


def main() -> int:
    pod = os.environ["POD_NAME"]
    statefulset, _, ordinal = pod.rpartition("-")
    try:
        replicas = desired_replicas(Path(sys.argv[1]), statefulset)
    except (OSError, KeyError, ValueError) as exc:
        say(f"cannot read statefulset {statefulset} ({exc}): staying a member")
        return 0
    if replicas is None:
        say(f"statefulset {statefulset} is gone (uninstall): staying a member")
        return 0
    if int(ordinal) < replicas:
        say(f"{pod} is within {replicas} replicas (restart or upgrade): staying a member")
        return 0
    say(f"{pod} is scaled away ({replicas} replicas): leaving the cluster")
    return 0 if leave(os.environ["MQ9_RAFT_ADDR"], float(os.environ.get("BOOT_LEAVE_WAIT", "30"))) else 1


if __name__ == "__main__":
    sys.exit(main())
