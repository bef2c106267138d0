"""``mq9cluster mailbox ...``: the human client. A person in the loop creates, sends to, watches and
lists mailboxes with nothing but this command; ``--json`` gives one JSON object per line for scripts.

It is an ordinary NATS client (nats-py) speaking dialect 1 (plus dialect 2's LIST for message
metadata); it imports nothing of the broker. Every failure ends as one ``mq9cluster: error: ...``
line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
import signal
import sys
from typing import Any, Awaitable, Callable

import click

PRIORITIES = ("critical", "urgent", "high", "normal", "low")
CONNECT_TIMEOUT = 2.0
REQUEST_TIMEOUT = 5.0
LIST_WAIT = 3.0  # list: how long to wait for the stored messages the broker said it has
ADDRESS = re.compile(r"[a-z0-9](?:[a-z0-9.]{0,126}[a-z0-9])?")  # the broker checks the rest (no "..", ...)


class ClientError(Exception):
    """A failure to report to the user in one line."""


def _servers(value: str) -> list[str]:
    urls = [part.strip() for part in value.split(",") if part.strip()]
    if not urls:
        raise click.BadParameter("give at least one URL, e.g. nats://127.0.0.1:4222", param_hint="--server")
    return [url if "://" in url else f"nats://{url}" for url in urls]


def _address(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """Refuse what cannot be a mail address before it becomes (part of) a NATS subject."""
    if not ADDRESS.fullmatch(value) or ".." in value:
        raise click.BadParameter(f"{value!r} is not a mail address: 1-128 of a-z, 0-9 and '.', "
                                 "no leading, trailing or double dot")
    return value


async def _connect(servers: list[str], keep_trying: bool = False):
    import nats

    async def quiet(_exc: Exception) -> None:  # nats-py logs every failed attempt otherwise
        return None

    async def lost() -> None:
        if keep_trying and nc.is_reconnecting:  # also called on our own close
            click.echo("(connection lost; reconnecting)", err=True)

    async def back() -> None:
        if keep_trying:
            click.echo(f"(reconnected to {nc.connected_url.netloc})", err=True)

    try:
        nc = await nats.connect(servers=servers, dont_randomize=True, connect_timeout=CONNECT_TIMEOUT,
                                reconnect_time_wait=0.2, max_reconnect_attempts=1, error_cb=quiet,
                                disconnected_cb=lost, reconnected_cb=back)
    except Exception as exc:  # nats-py raises several unrelated types (OSError, NoServersError, ...)
        raise ClientError(f"cannot connect to {', '.join(servers)}: {exc or type(exc).__name__}") from None
    if keep_trying:
        nc.options["max_reconnect_attempts"] = -1  # a long-running watch survives a node going away
    return nc


async def _request(nc, subject: str, body: bytes = b"") -> dict:
    import nats.errors

    try:
        reply = await nc.request(subject, body, timeout=REQUEST_TIMEOUT)
    except nats.errors.NoRespondersError:
        raise ClientError(f"no mq9 broker answers {subject} (is this an mq9cluster server?)") from None
    except (nats.errors.TimeoutError, asyncio.TimeoutError):
        raise ClientError(f"no reply to {subject} within {REQUEST_TIMEOUT:g} s") from None
    try:
        data = json.loads(reply.data)
    except ValueError:
        raise ClientError(f"unexpected reply to {subject}: {reply.data[:200]!r}") from None
    if isinstance(data, dict) and data.get("error"):
        raise ClientError(data["error"])
    return data


def _run(ctx: click.Context, work: Callable[[Any], Awaitable[None]], keep_trying: bool = False) -> None:
    """Connect, run ``work(nc)``, close; any failure is one line on stderr and exit 1."""
    servers = ctx.obj["servers"]

    async def main() -> None:
        nc = await _connect(servers, keep_trying)
        try:
            await work(nc)
        finally:
            await nc.close()

    try:
        asyncio.run(main())
    except ClientError as exc:
        click.echo(f"mq9cluster: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C outside watch: stop quietly, as a shell expects
        sys.exit(130)
    except Exception as exc:  # a failure nobody foresaw still ends in one line, not a traceback
        click.echo(f"mq9cluster: error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)


def _emit(ctx: click.Context, record: dict, text: str) -> None:
    click.echo(json.dumps(record) if ctx.obj["json"] else text)


def _body_fields(data: bytes) -> dict:
    try:
        return {"body": data.decode()}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(data).decode()}


def _clock(ts_ms: int | None) -> str:
    if not ts_ms:
        return "-"
    return datetime.datetime.fromtimestamp(ts_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _delivery(msg) -> dict:
    headers = msg.headers or {}
    return {"msg_id": int(headers.get("mq9-msg-id", 0)), "priority": msg.subject.rsplit(".", 1)[1],
            "ts": int(headers.get("mq9-ts", 0)), **_body_fields(msg.data)}


def _line(record: dict) -> str:
    body = record.get("body", f"<{len(base64.b64decode(record.get('body_base64', '')))} bytes, not UTF-8>")
    head = f"{_clock(record['ts'])}  {record['priority']:<8}  #{record['msg_id']:<6} "
    return head + body.replace("\n", "\n" + " " * len(head))  # a multi-line body stays under its header


@click.group()
@click.option("-s", "--server", default="nats://127.0.0.1:4222", show_default=True, envvar="MQ9_SERVER",
              metavar="URL[,URL...]",
              help="Broker URLs, comma-separated, tried in this order; any node of a cluster will do (env MQ9_SERVER).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of text.")
@click.pass_context
def mailbox(ctx: click.Context, server: str, as_json: bool) -> None:
    """Create, send to, watch and list mailboxes from a terminal (a NATS client of the broker)."""
    ctx.obj = {"servers": _servers(server), "json": as_json}


@mailbox.command()
@click.option("--public", "name", metavar="NAME", help="Create a public mailbox of this name (listed by `public`).")
@click.option("--desc", default="", help="Description shown in the public list.")
@click.option("--ttl", type=click.IntRange(min=0), default=0, show_default=True, metavar="SECONDS",
              help="Lifetime from creation; 0 never expires. Fixed at creation.")
@click.pass_context
def create(ctx: click.Context, name: str | None, desc: str, ttl: int) -> None:
    """Create a mailbox and print its address (a public NAME created again is left as it is)."""
    options: dict[str, Any] = {"ttl": ttl}
    if name:
        options.update(public=True, name=name, desc=desc)
    elif desc:
        raise click.UsageError("--desc needs --public NAME")

    async def work(nc) -> None:
        reply = await _request(nc, "$mq9.AI.MAILBOX.CREATE", json.dumps(options).encode())
        _emit(ctx, reply, reply["mail_address"])
        if not reply.get("is_new", True) and not ctx.obj["json"]:
            click.echo("(it already existed: left as it was)", err=True)

    _run(ctx, work)


@mailbox.command()
@click.argument("address", callback=_address)
@click.argument("body")
@click.option("-p", "--priority", type=click.Choice(PRIORITIES), default="normal", show_default=True)
@click.pass_context
def send(ctx: click.Context, address: str, body: str, priority: str) -> None:
    """Send BODY (`-` reads it from stdin) to ADDRESS; prints the msg_id once it is stored."""
    data = sys.stdin.buffer.read() if body == "-" else body.encode()

    async def work(nc) -> None:
        reply = await _request(nc, f"$mq9.AI.MAILBOX.{address}.{priority}", data)
        _emit(ctx, {"mail_address": address, "priority": priority, **reply}, f"sent #{reply['msg_id']} to {address}")

    _run(ctx, work)


async def _require_mailbox(nc, address: str) -> list[dict]:
    """The stored messages' metadata; an error if the mailbox does not exist."""
    return (await _request(nc, f"$mq9.AI.MAILBOX.LIST.{address}", b"{}"))["messages"]


@mailbox.command()
@click.argument("address", callback=_address)
@click.pass_context
def watch(ctx: click.Context, address: str) -> None:
    """Print the stored messages of ADDRESS (highest priority first), then new ones as they arrive.

    Runs until Ctrl-C (exit 0). Survives a broker node going away when several --server URLs (or a
    cluster's advertised ones) are known; nothing is printed twice.
    """

    async def work(nc) -> None:
        await _require_mailbox(nc, address)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        seen: set[int] = set()  # a resubscription after a reconnect replays the backlog again

        async def on_msg(msg) -> None:
            record = _delivery(msg)
            if record["msg_id"] in seen:
                return
            seen.add(record["msg_id"])
            _emit(ctx, {"mail_address": address, **record}, _line(record))

        await nc.subscribe(f"$mq9.AI.MAILBOX.{address}.*", cb=on_msg)
        if not ctx.obj["json"]:
            click.echo(f"watching {address} (Ctrl-C to stop)", err=True)
        await stop.wait()

    _run(ctx, work, keep_trying=True)


@mailbox.command("list")
@click.argument("address", callback=_address)
@click.pass_context
def list_messages(ctx: click.Context, address: str) -> None:
    """Print the messages stored in ADDRESS, in delivery order (highest priority first); nothing is removed."""

    async def work(nc) -> None:
        want = len(await _require_mailbox(nc, address))
        got: list[dict] = []
        done = asyncio.Event()

        async def on_msg(msg) -> None:
            got.append(_delivery(msg))
            if len(got) >= want:
                done.set()

        if want:
            sub = await nc.subscribe(f"$mq9.AI.MAILBOX.{address}.*", cb=on_msg)
            try:
                await asyncio.wait_for(done.wait(), LIST_WAIT)
            except asyncio.TimeoutError:
                pass  # some expired or were deleted since LIST: print what came
            await sub.unsubscribe()
        for record in got[:want]:
            _emit(ctx, {"mail_address": address, **record}, _line(record))
        if not ctx.obj["json"]:
            click.echo(f"{min(len(got), want)} message(s) in {address}", err=True)

    _run(ctx, work)


@mailbox.command("public")
@click.pass_context
def public_list(ctx: click.Context) -> None:
    """List the public mailboxes: name, TTL, expiry, description."""

    async def work(nc) -> None:
        boxes = (await _request(nc, "$mq9.AI.PUBLIC.LIST", b"{}"))["mailboxes"]
        for box in boxes:
            expires = "never" if not box.get("expires_at") else _clock(box["expires_at"])
            _emit(ctx, box, f"{box['mail_address']:<32} ttl={box.get('ttl', 0):<8} expires={expires:<19}  "
                            f"{box.get('desc', '')}")
        if not ctx.obj["json"]:
            click.echo(f"{len(boxes)} public mailbox(es)", err=True)

    _run(ctx, work)
