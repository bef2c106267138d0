"""The ``mq9cluster`` command. Options of ``start`` are generated from ``Settings``, never written out again."""

from __future__ import annotations

import json
import sys
import typing
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import click
from pydantic.fields import FieldInfo

from mq9cluster import __version__
from mq9cluster.config import Settings, load_settings, reference_markdown
from mq9cluster.errors import ClusterAdminError, ConfigError, MembershipUnknown, Mq9Error


def _click_type(field: FieldInfo) -> Any:
    annotation = field.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice(list(typing.get_args(annotation)))
    if args and typing.get_origin(annotation) is not typing.Literal:
        annotation = args[0]
    return {int: click.INT, float: click.FLOAT, Path: click.Path(path_type=Path)}.get(annotation, click.STRING)


def _default_text(name: str, field: FieldInfo) -> str:
    if field.default_factory is not None or field.default is None:
        return ""
    return f" [default: {field.default}]"


def settings_options(command: Callable) -> Callable:
    """Decorate a click command with one option per Settings field (flags from the field's metadata)."""
    for name, field in reversed(list(Settings.model_fields.items())):
        extra = field.json_schema_extra or {}
        flags = list(extra.get("flags", [f"--{name.replace('_', '-')}"]))
        env = f"MQ9_{name.upper()}"
        help_text = f"{field.description}{_default_text(name, field)} (env {env})"
        if field.annotation is bool:
            command = click.option(*flags, name, is_flag=True, default=None, help=help_text)(command)
        else:
            command = click.option(*flags, name, type=_click_type(field), default=None, help=help_text)(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """mq9cluster: a clustered mq9 broker for AI agents that speaks the NATS protocol.

    Any NATS client connects unchanged. Start a node with `mq9cluster start`.
    """


def node_options(command: Callable) -> Callable:
    """The options of every command that runs a node: config file, log switches, all Settings."""
    command = settings_options(command)
    command = click.option("-DV", "debug_trace", is_flag=True, help="Debug and trace logging.")(command)
    command = click.option("-V", "--trace", is_flag=True, help="Protocol trace logging (nats-server's -V).")(command)
    command = click.option("-D", "--debug", is_flag=True, help="Debug logging (nats-server's -D).")(command)
    return click.option(
        "-c", "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
        help="Config file (TOML, or JSON by .json suffix); flags and MQ9_* env override it.",
    )(command)


def _run_node(config_file: Path | None, debug: bool, trace: bool, debug_trace: bool, flags: dict[str, Any],
              join_seeds: list[str] | None = None, join_wait: float = 0.0) -> None:
    if trace or debug_trace:
        flags["log_level"] = "trace"
    elif debug and flags.get("log_level") is None:
        flags["log_level"] = "debug"
    try:
        settings = load_settings(config_file, **flags)
        from mq9cluster import app

        app.run(settings, join_seeds=join_seeds, join_wait=join_wait)
    except (ConfigError, ClusterAdminError) as exc:
        click.echo(f"mq9cluster: error: {exc}", err=True)
        sys.exit(2)
    except Mq9Error as exc:  # the node stopped on an error it reported (damaged data it did not rebuild)
        click.echo(f"mq9cluster: error: {exc}", err=True)
        sys.exit(1)


@main.command()
@node_options
def start(config_file: Path | None, debug: bool, trace: bool, debug_trace: bool, **flags: Any) -> None:
    """Start a broker node (flags shaped like nats-server's)."""
    _run_node(config_file, debug, trace, debug_trace, flags)


@main.command()
@click.option("--seed", required=True, metavar="HOST:PORT[,HOST:PORT...]",
              help="Raft address of any member of the running cluster; several (comma-separated) are tried in order.")
@click.option("--join-wait", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              help="Keep retrying seeds that do not answer and an addition that fails (no leader yet, another "
                   "node joining) for this long.")
@node_options
def join(seed: str, join_wait: float, config_file: Path | None, debug: bool, trace: bool, debug_trace: bool,
         **flags: Any) -> None:
    """Start a node and add it to a running cluster (its members come from the seed, --peers is ignored).

    The node catches up from the leader (a snapshot, then the log) and serves reads once it has.
    Run the same command to restart it: a node that is already a member just starts.
    """
    seeds = [part.strip() for part in seed.split(",") if part.strip()]
    _run_node(config_file, debug, trace, debug_trace, flags, join_seeds=seeds, join_wait=join_wait)


EXIT_UNKNOWN = 3  # `leave`: the removal was proposed and not confirmed; run the same command again


@main.command()
@click.option("--raft-addr", "member", required=True, metavar="HOST:PORT", help="Raft address of the member to remove.")
@click.option("--seed", metavar="HOST:PORT", help="Raft address of another member to go through (default: the member itself).")
@click.option("--cluster-password", envvar="MQ9_CLUSTER_PASSWORD", help="The cluster's password, if it has one.")
def leave(member: str, seed: str | None, cluster_password: str | None) -> None:
    """Remove a member from the cluster (leadership moves first if it leads); then stop its process.

    Exit 0: removed, or not a member (any more). 1: nothing was changed (no leader, unreachable,
    refused). 3: outcome unknown, the removal may still commit; run the same command again.
    """
    from mq9cluster.cluster import admin

    try:
        removed, leader = admin.remove_member(member, seed, password=cluster_password)
    except MembershipUnknown as exc:
        click.echo(f"mq9cluster: outcome unknown: {exc}. The removal may still commit. Do not wipe or reuse the "
                   "node yet; run this command again once the cluster has a quorum: it reports success when the "
                   "removal has committed and proposes it again if it was lost", err=True)
        sys.exit(EXIT_UNKNOWN)
    except ClusterAdminError as exc:
        click.echo(f"mq9cluster: error: {exc}", err=True)
        sys.exit(1)
    if removed:
        click.echo(f"{member} removed from the cluster (committed through {leader}); stop its process now")
    else:
        click.echo(f"{member} is not a member (committed, as the leader {leader} sees it): nothing to do; "
                   "stop its process if it still runs")


@main.command()
@click.option("--seed", default="127.0.0.1:7222", show_default=True, metavar="HOST:PORT",
              help="Raft address of any member.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--cluster-password", envvar="MQ9_CLUSTER_PASSWORD", help="The cluster's password, if it has one.")
def status(seed: str, as_json: bool, cluster_password: str | None) -> None:
    """Show every member: role, term, commit and applied index, lag behind the leader's commit index."""
    from mq9cluster.cluster import admin

    try:
        views = admin.cluster_status(seed, password=cluster_password)
    except ClusterAdminError as exc:
        click.echo(f"mq9cluster: error: {exc}", err=True)
        sys.exit(1)
    leader_commit = max((v.status.commit_index for v in views if v.status and v.status.role == "leader"), default=None)
    rows = []
    for view in views:
        st = view.status
        lag = None if st is None or leader_commit is None else max(leader_commit - st.last_applied, 0)
        rows.append({"address": view.address, "role": st.role if st else "unreachable",
                     "term": st.term if st else None, "leader": st.leader if st else None,
                     "commit_index": st.commit_index if st else None,
                     "last_applied": st.last_applied if st else None, "lag": lag,
                     "error": view.error})
    if as_json:
        click.echo(json.dumps({"members": rows}, indent=2))
        return
    head = f"{'NODE':<24}{'ROLE':<13}{'TERM':>6}{'COMMIT':>10}{'APPLIED':>10}{'LAG':>8}  LEADER"
    click.echo(head)
    for row in rows:
        cells = [row[k] if row[k] is not None else "-" for k in ("term", "commit_index", "last_applied", "lag")]
        click.echo(f"{row['address']:<24}{row['role']:<13}{cells[0]:>6}{cells[1]:>10}{cells[2]:>10}{cells[3]:>8}"
                   f"  {row['leader'] or row['error'] or '-'}")
    if any(row["role"] == "unreachable" for row in rows):
        sys.exit(1)


@main.command()
@click.option("-c", "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="The node's config file; its MQ9_* environment applies too.")
@click.option("--ready", is_flag=True, help="Check /readyz (a caught-up member) instead of /healthz (process up).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True, metavar="SECONDS")
def healthcheck(config_file: Path | None, ready: bool, timeout: float) -> None:
    """Exit 0 if the node on this host answers its monitoring health endpoint with 200, else 1.

    The monitoring address comes from the same settings as `start` (config file, MQ9_* env), so a
    container's HEALTHCHECK needs no arguments.
    """
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        click.echo(f"mq9cluster: error: {exc}", err=True)
        sys.exit(1)
    if not settings.http_port:
        click.echo("mq9cluster: error: monitoring is disabled (http_port 0)", err=True)
        sys.exit(1)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host if ':' not in host else f'[{host}]'}:{settings.http_port}/{'readyz' if ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            code, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        code, body = exc.code, exc.read()
    except OSError as exc:
        click.echo(f"{url}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{url}: {code} {body.decode(errors='replace').strip()}", err=code != 200)
    sys.exit(0 if code == 200 else 1)


@main.command()
def version() -> None:
    """Print the mq9cluster version."""
    click.echo(f"mq9cluster {__version__}")


@main.command("config-reference")
def config_reference() -> None:
    """Print the configuration reference (Markdown) generated from the settings model."""
    click.echo(reference_markdown(), nl=False)


from mq9cluster.cli_mailbox import mailbox  # noqa: E402  (the human client; imports nats only when run)

main.add_command(mailbox)
