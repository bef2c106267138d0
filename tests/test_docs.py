"""Every shell and Python code block in README.md and docs/ runs, against a real three-node cluster.

How blocks are treated, by the language of their fence:
- ``sh``/``bash``/``shell``: the whole block is one ``bash -e`` script, run from the repository root
  with the venv's ``bin`` first on PATH (``mq9cluster``, ``.venv/bin/python``) and ``MQ9_SERVER``
  pointing at the cluster; it must exit 0.
- ``python``: run as a script with the venv's interpreter; it must exit 0.
- any other fence (untagged output, directory trees, synopses, TOML): text, not run.

In both kinds the default address ``127.0.0.1:4222`` is replaced with a node of the test's cluster.
An HTML comment on the line right before a fence changes what happens:
- ``<!-- docs-test: skip REASON -->``: not run; reported as skipped with the reason (a real
  Kubernetes cluster, Docker, several machines, a long-running server);
- ``<!-- docs-test: ctrl-c after N -->``: the block runs for N seconds, then gets SIGINT (as a
  person's Ctrl-C) and must still exit 0.

Also: every relative link in these files points at a file that exists, and every `mq9cluster ...`
command they mention (inline or in any block, run or not) names real subcommands and flags.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from tests.support.cluster import Cluster

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL = {"sh", "bash", "shell"}
MARKER = re.compile(r"<!--\s*docs-test:\s*(skip|ctrl-c after)\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\S*)\s*$")
BLOCK_TIMEOUT = 90


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    marker: tuple[str, str] | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    found, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, end = i, i + 1
        while not lines[end].startswith("```"):
            end += 1
        marker = MARKER.search(lines[start - 1]) if start else None
        found.append(Block(path, start + 1, fence.group(1), "\n".join(lines[start + 1:end]) + "\n",
                           marker.groups() if marker else None))
        i = end + 1
    return found


RUNNABLE = [b for path in DOC_FILES for b in blocks_of(path) if b.lang in SHELL | {"python"}]


@pytest.mark.timeout(BLOCK_TIMEOUT + 30)
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_code_block_runs(block: Block, shared_cluster: Cluster, tmp_path: Path):
    if block.marker and block.marker[0] == "skip":
        pytest.skip(f"{block.name} marked: {block.marker[1]}")
    node = shared_cluster.nodes[0]
    code = block.code.replace("127.0.0.1:4222", f"127.0.0.1:{node.port}")
    script = tmp_path / ("block.py" if block.lang == "python" else "block.sh")
    script.write_text(code)
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "MQ9_SERVER": node.url}
    command = [sys.executable, str(script)] if block.lang == "python" else ["bash", "-e", str(script)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    interrupt = float(block.marker[1]) if block.marker and block.marker[0] == "ctrl-c after" else None
    try:
        out, _ = proc.communicate(timeout=interrupt or BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        if interrupt is None:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"{block.name} still running after {BLOCK_TIMEOUT} s:\n{out}")
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C goes to the whole foreground group
        out, _ = proc.communicate(timeout=10)
        assert out.strip(), f"{block.name} printed nothing before Ctrl-C"
    assert proc.returncode == 0, f"{block.name} exited {proc.returncode}:\n{block.code}\n--- output ---\n{out}"
    assert "Traceback" not in out, out


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_relative_links_resolve(path: Path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    broken = [target for target in LINK.findall(text)
              if "://" not in target and not target.startswith("mailto:") and not (path.parent / target).exists()]
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


def mq9cluster_commands(path: Path) -> list[str]:
    """Every `mq9cluster ...` in inline code, and every code-block line that starts with it."""
    text = path.read_text()
    spans = re.findall(r"`(mq9cluster [^`]*)`", re.sub(r"```.*?```", "", text, flags=re.S))
    lines = [line.split("#")[0].strip() for block in re.findall(r"```\S*\n(.*?)```", text, flags=re.S)
             for line in block.splitlines() if line.strip().startswith("mq9cluster ")]
    return spans + lines


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(ROOT)) for p in DOC_FILES])
def test_mq9cluster_commands_in_the_docs_exist(path: Path):
    """Each documented subcommand exists and takes every --flag/-f the docs give it."""
    from mq9cluster.cli import main

    wrong = []
    for command in mq9cluster_commands(path):
        tokens = [t for t in re.split(r"[\s\[\]|]+", command)[1:] if t]
        group, options, value_next = main, {}, False
        for token in tokens:
            if value_next:
                value_next = False
            elif token.startswith("-"):
                flag = token.split("=")[0]
                if flag not in options and flag not in ("-h", "--help"):
                    wrong.append(f"{command}: {flag}")
                value_next = "=" not in token and options.get(flag, False)
            elif isinstance(group, click.Group) and token in group.commands:
                group = group.commands[token]
                options.update({opt: not getattr(param, "is_flag", False) for param in group.params
                                if isinstance(param, click.Option) for opt in param.opts + param.secondary_opts})
            elif isinstance(group, click.Group) and token != "...":
                wrong.append(f"{command}: no command {token!r}")
                break
    assert not wrong, f"{path.relative_to(ROOT)}: {wrong}"
