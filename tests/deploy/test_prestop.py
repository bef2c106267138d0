"""The preStop hook's decision alone (files/prestop.py): it leaves only when surely scaled away.

The leave itself runs in test_chart_boot against real brokers; here no broker runs, so a hook
that tried to leave would fail (exit 1) and show it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.chart import CHART
from tests.deploy.fake_api import FakeApi
from tests.support.broker import free_port

HOOK = CHART / "files" / "prestop.py"


def hook(account: Path, pod: str, api: tuple[str, int]) -> subprocess.CompletedProcess:
    env = {**os.environ, "POD_NAME": pod, "MQ9_RAFT_ADDR": f"127.0.0.1:{free_port()}", "BOOT_LEAVE_WAIT": "0",
           "KUBERNETES_SERVICE_HOST": api[0], "KUBERNETES_SERVICE_PORT": str(api[1]),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, str(HOOK), str(account)], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def api(tmp_path: Path):
    server = FakeApi(tmp_path, "agents", "mq9-mq9cluster")
    account = tmp_path / "account"
    account.mkdir()
    server.write_service_account(account, "agents")
    yield server, account
    server.close()


@pytest.mark.parametrize(("replicas", "pod", "says"), [
    (3, "mq9-mq9cluster-2", "within 3 replicas"),
    (5, "mq9-mq9cluster-4", "within 5 replicas"),
    (None, "mq9-mq9cluster-4", "is gone (uninstall)"),
])
def test_a_restart_or_an_uninstall_keeps_the_member(api, replicas, pod, says) -> None:
    server, account = api
    server.replicas = replicas
    done = hook(account, pod, server.address)
    assert done.returncode == 0 and says in done.stdout and "staying a member" in done.stdout, done


def test_in_doubt_the_member_stays(api, tmp_path: Path) -> None:
    server, account = api
    (account / "token").write_text("a token the API refuses")
    done = hook(account, "mq9-mq9cluster-4", server.address)
    assert done.returncode == 0 and "401" in done.stdout and "staying a member" in done.stdout, done
    server.close()
    done = hook(account, "mq9-mq9cluster-4", ("127.0.0.1", free_port()))  # the API does not answer
    assert done.returncode == 0 and "cannot read statefulset" in done.stdout, done


def test_a_scaled_away_pod_tries_to_leave(api) -> None:
    server, account = api
    server.replicas = 3
    done = hook(account, "mq9-mq9cluster-3", server.address)
    assert "scaled away (3 replicas): leaving" in done.stdout
    assert done.returncode == 1 and "leave failed, giving up" in done.stdout  # no broker runs here
