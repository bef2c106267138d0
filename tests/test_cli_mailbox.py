"""``mq9cluster mailbox ...``, the human client, run as a user runs it against real brokers."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.support.broker import free_port, mq9cluster_command


def mailbox(server: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([*mq9cluster_command(), "mailbox", "--server", server, *args], input=stdin,
                          capture_output=True, text=True, timeout=30)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ok(server: str, *args: str, stdin: str | None = None) -> str:
    done = mailbox(server, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout


def watcher(server: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*mq9cluster_command(), "mailbox", "--server", server, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_lines(proc: subprocess.Popen, count: int, timeout: float = 10.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        assert time.monotonic() < deadline, f"watch printed only {lines}"
        lines.append(proc.stdout.readline().rstrip("\n"))
    return lines


def interrupt(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    return proc.returncode, err


def test_create_send_list_and_json(mq9):
    url = mq9().url
    address = ok(url, "create", "--ttl", "600").strip()
    assert ok(url, "send", address, "routine report") == f"sent #1 to {address}\n"
    sent = json.loads(ok(url, "--json", "send", "--priority", "critical", address, "stop the line"))
    assert sent == {"mail_address": address, "priority": "critical", "msg_id": 2}
    ok(url, "send", address, "-", stdin="from stdin")
    ok(url, "send", "-p", "low", address, "line one\nline two")
    binary = subprocess.run([*mq9cluster_command(), "mailbox", "--server", url, "send", "-p", "low", address, "-"],
                            input=b"\xff", capture_output=True, timeout=30)
    assert binary.returncode == 0, binary.stderr

    text = ok(url, "list", address).splitlines()
    assert [line.split()[2:] for line in text[:3]] == [
        ["critical", "#2", "stop", "the", "line"], ["normal", "#1", "routine", "report"],
        ["normal", "#3", "from", "stdin"]]
    assert text[3].endswith("#4      line one") and text[4] == " " * (len(text[3]) - 8) + "line two"
    assert text[5].endswith("#5      <1 bytes, not UTF-8>")
    records = [json.loads(line) for line in ok(url, "--json", "list", address).splitlines()]
    assert [(r["msg_id"], r["priority"], r.get("body", r.get("body_base64"))) for r in records] == [
        (2, "critical", "stop the line"), (1, "normal", "routine report"), (3, "normal", "from stdin"),
        (4, "low", "line one\nline two"), (5, "low", "/w==")]
    assert ok(url, "list", address) == "\n".join(text) + "\n", "list must not consume"


def test_public_mailboxes(mq9):
    url = mq9().url
    assert ok(url, "create", "--public", "ops.approvals", "--desc", "ask a human", "--ttl", "3600") == "ops.approvals\n"
    again = mailbox(url, "create", "--public", "ops.approvals")
    assert (again.returncode, again.stdout) == (0, "ops.approvals\n") and "already existed" in again.stderr
    (line,) = ok(url, "public").splitlines()
    assert line.startswith("ops.approvals") and "ttl=3600" in line and line.endswith("ask a human")
    (box,) = [json.loads(line) for line in ok(url, "--json", "public").splitlines()]
    assert box["mail_address"] == "ops.approvals" and box["desc"] == "ask a human" and box["ttl"] == 3600


def test_watch_prints_backlog_then_live_and_exits_cleanly_on_ctrl_c(mq9):
    url = mq9().url
    address = ok(url, "create").strip()
    ok(url, "send", address, "old news")
    ok(url, "send", "-p", "critical", address, "old but critical")
    proc = watcher(url, "watch", address)
    try:
        backlog = read_lines(proc, 2)
        ok(url, "send", "-p", "low", address, "fresh")
        live = read_lines(proc, 1)
    finally:
        rc, err = interrupt(proc)
    assert [line.split(None, 4)[2:] for line in backlog + live] == [
        ["critical", "#2", "old but critical"], ["normal", "#1", "old news"], ["low", "#3", "fresh"]]
    assert rc == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_watch_json(mq9):
    url = mq9().url
    address = ok(url, "create").strip()
    ok(url, "send", address, "hello")
    proc = watcher(url, "--json", "watch", address)
    try:
        (line,) = read_lines(proc, 1)
    finally:
        rc, _ = interrupt(proc)
    record = json.loads(line)
    assert record["mail_address"] == address and record["body"] == "hello" and record["msg_id"] == 1
    assert record["priority"] == "normal" and record["ts"] > 0 and rc == 0


@pytest.mark.parametrize("args, message", [
    (("send", "no.such.box", "x"), "mailbox no.such.box does not exist"),
    (("watch", "no.such.box"), "mailbox no.such.box does not exist"),
    (("list", "no.such.box"), "mailbox no.such.box does not exist"),
    (("create", "--public", "Bad Name"), "invalid mail address"),
])
def test_bad_input_is_one_clear_line(mq9, args, message):
    done = mailbox(mq9().url, *args)
    assert done.returncode == 1
    assert done.stderr.startswith("mq9cluster: error: ") and message in done.stderr, done.stderr


def test_usage_errors():
    done = mailbox("nats://127.0.0.1:1", "send", "box", "x", "--priority", "asap")
    assert done.returncode == 2 and "asap" in done.stderr
    done = mailbox(",", "public")
    assert done.returncode == 2 and "--server" in done.stderr


@pytest.mark.parametrize("address", ["a b", "Upper", "x.*", "x.>", "", ".x", "a..b"])
def test_addresses_that_cannot_be_one_are_refused_before_connecting(address):
    for command in (["send", address, "x"], ["watch", address], ["list", address]):
        done = mailbox("nats://127.0.0.1:1", *command)
        assert done.returncode == 2 and "is not a mail address" in done.stderr, done.stderr


def test_unreachable_servers_fail_fast_and_clearly():
    dead = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = mailbox(dead, "public")
    assert done.returncode == 1 and time.monotonic() - started < 15
    assert done.stderr.startswith("mq9cluster: error: cannot connect to nats://127.0.0.1:"), done.stderr


def test_several_servers_any_node_of_a_cluster(cluster):
    group = cluster(3)
    a, b, c = group.urls
    dead = f"nats://127.0.0.1:{free_port()}"
    address = ok(f"{dead},{a}", "create").strip()
    ok(f"{b},{c}", "send", "-p", "urgent", address, "via b")
    proc = watcher(f"{c},{a}", "watch", address)
    try:
        (first,) = read_lines(proc, 1)
        group.nodes[2].kill()  # the node the watch is connected to: it reconnects to a, prints no duplicate
        ok(a, "send", address, "after the kill")
        (second,) = read_lines(proc, 1, timeout=20)
    finally:
        rc, err = interrupt(proc)
    assert first.split(None, 4)[2:] == ["urgent", "#1", "via b"]
    assert second.split(None, 4)[2:] == ["normal", "#2", "after the kill"]
    assert rc == 0, err
    assert "(connection lost; reconnecting)" in err
    assert "(reconnected to 127.0.0.1:" in err  # to a or b: the cluster advertises every node
