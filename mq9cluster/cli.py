"""The ``mq9cluster`` command. Options of ``start`` are generated from ``Settings``, never written out again."""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any, Callable

import click
from pydantic.fields import FieldInfo

from mq9cluster import __version__
from mq9cluster.config import Settings, load_settings, reference_markdown
from mq9cluster.errors import ConfigError


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
        command = click.option(*flags, name, type=_click_type(field), default=None, help=help_text)(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """mq9cluster: a clustered mq9 broker for AI agents that speaks the NATS protocol.

    Any NATS client connects unchanged. Start a node with `mq9cluster start`.
    """


@main.command()
@click.option("-c", "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Config file (TOML, or JSON by .json suffix); flags and MQ9_* env override it.")
@click.option("-D", "--debug", is_flag=True, help="Debug logging (nats-server's -D).")
@click.option("-V", "--trace", is_flag=True, help="Protocol trace logging (nats-server's -V).")
@click.option("-DV", "debug_trace", is_flag=True, help="Debug and trace logging.")
@settings_options
def start(config_file: Path | None, debug: bool, trace: bool, debug_trace: bool, **flags: Any) -> None:
    """Start a broker node (flags shaped like nats-server's)."""
    if trace or debug_trace:
        flags["log_level"] = "trace"
    elif debug and flags.get("log_level") is None:
        flags["log_level"] = "debug"
    try:
        settings = load_settings(config_file, **flags)
        from mq9cluster import app

        app.run(settings)
    except ConfigError as exc:
        click.echo(f"mq9cluster: error: {exc}", err=True)
        sys.exit(2)


@main.command()
def version() -> None:
    """Print the mq9cluster version."""
    click.echo(f"mq9cluster {__version__}")


@main.command("config-reference")
def config_reference() -> None:
    """Print the configuration reference (Markdown) generated from the settings model."""
    click.echo(reference_markdown(), nl=False)
