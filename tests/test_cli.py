"""The mq9cluster command as a user runs it (real processes)."""

from __future__ import annotations

import os
import socket
import subprocess
import time

from mq9cluster import __version__
from tests.support.broker import free_port, mq9cluster_command


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([*mq9cluster_command(), *args], capture_output=True, text=True, timeout=timeout)


def test_version():
    done = run("version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"mq9cluster {__version__}"


def test_start_help_speaks_nats_server_flags():
    out = run("start", "--help").stdout
    for flag in ("-a, --addr", "-p, --port", "-m, --http-port", "--data-dir", "-c, --config", "--user", "--pass", "--auth", "-D", "-V"):
        assert flag in out, flag


def test_half_given_auth_fails_with_a_clear_message(tmp_path):
    done = run("start", "-p", "0", "-m", "0", "--data-dir", str(tmp_path), "--user", "u")
    assert done.returncode == 2
    assert "--user and --pass go together" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_value_names_the_option(tmp_path):
    done = run("start", "--max-payload", "0", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "option 'max_payload'" in done.stderr


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("start", "-a", "127.0.0.1", "-p", str(port), "-m", "0", "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_unwritable_data_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = run("start", "-p", "0", "-m", "0", "--data-dir", str(blocker / "sub"))
    assert done.returncode == 2
    assert "data dir" in done.stderr


def test_healthcheck_follows_the_nodes_settings_and_exits_by_the_endpoint(mq9, tmp_path):
    unused = {**os.environ, "MQ9_HTTP_PORT": str(free_port())}
    done = subprocess.run([*mq9cluster_command(), "healthcheck"], capture_output=True, text=True, env=unused, timeout=20)
    assert done.returncode == 1 and "Traceback" not in done.stderr

    node = mq9()
    config = tmp_path / "node.toml"
    config.write_text(f"http_port = {node.http_port}\nhost = '127.0.0.1'\n")
    done = run("healthcheck", "-c", str(config))
    assert done.returncode == 0, done.stderr
    assert f"127.0.0.1:{node.http_port}/healthz: 200" in done.stdout
    deadline = time.monotonic() + 10  # a single node leads itself once its election timeout passed
    while (done := run("healthcheck", "-c", str(config), "--ready")).returncode != 0:
        assert "/readyz: 503" in done.stderr and time.monotonic() < deadline, done.stderr
        time.sleep(0.2)
    assert "/readyz: 200" in done.stdout
