"""Settings: the one list of broker options.

Precedence, lowest first: defaults, the config file (TOML or JSON), ``MQ9_*`` environment
variables, command-line flags. The CLI and the docs derive their options from ``Settings``;
no other module reads the environment.
"""

from __future__ import annotations

import json
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from mq9cluster.errors import ConfigError

LogLevel = Literal["trace", "debug", "info", "warning", "error"]


def _flags(*names: str, help: str) -> dict[str, Any]:
    """Field metadata: the CLI flag names (nats-server's spelling first) and the help text."""
    return {"json_schema_extra": {"flags": list(names)}, "description": help}


class Settings(BaseSettings):
    """Every broker option, its default, its flags and its validation."""

    model_config = SettingsConfigDict(env_prefix="MQ9_", extra="forbid", frozen=True)

    host: str = Field("0.0.0.0", **_flags("-a", "--addr", "--host", help="Client listen address."))
    port: int = Field(4222, ge=0, le=65535, **_flags("-p", "--port", help="Client port (0 picks a free one)."))
    http_port: int = Field(
        8222, ge=0, le=65535,
        **_flags("-m", "--http-port", "--http_port", help="Monitoring HTTP port (0 disables it)."),
    )
    server_name: str = Field(
        default_factory=socket.gethostname,
        **_flags("-n", "--name", "--server-name", help="Server name reported in INFO (default: host name)."),
    )
    data_dir: Path = Field(Path("data"), **_flags("--data-dir", "-sd", help="Directory of the durable store."))
    log_level: LogLevel = Field("info", **_flags("--log-level", help="Log level."))
    max_payload: int = Field(
        1048576, ge=1, le=64 * 1048576,
        **_flags("--max-payload", help="Largest message payload (bytes) a client may publish."),
    )
    max_control_line: int = Field(
        4096, ge=256, le=1048576, **_flags("--max-control-line", help="Longest protocol line (bytes)."),
    )
    max_connections: int = Field(
        65536, ge=1, **_flags("--max-connections", help="Client connections accepted at once."),
    )
    max_subscriptions: int = Field(
        0, ge=0, **_flags("--max-subscriptions", help="Subscriptions per connection (0 = unlimited)."),
    )
    max_pending: int = Field(
        64 * 1048576, ge=65536,
        **_flags("--max-pending", help="Bytes queued to one client before it is cut as a slow consumer."),
    )
    write_deadline: float = Field(
        10.0, gt=0, **_flags("--write-deadline", help="Seconds a client's socket may stay blocked before it is cut."),
    )
    ping_interval: float = Field(
        120.0, gt=0, **_flags("--ping-interval", help="Seconds between server PINGs to an idle client."),
    )
    ping_max: int = Field(
        2, ge=1, **_flags("--ping-max", help="Unanswered PINGs before a client is closed as stale."),
    )
    first_ping_delay: float = Field(
        2.0, gt=0, **_flags("--first-ping-delay", help="Seconds after CONNECT before the first server PING."),
    )
    lame_duck_duration: float = Field(
        120.0, gt=0, **_flags("--lame-duck-duration", help="Seconds over which lame-duck mode closes clients."),
    )
    lame_duck_grace: float = Field(
        10.0, ge=0, **_flags("--lame-duck-grace", help="Seconds lame-duck mode waits before closing the first client."),
    )
    node_id: str = Field(
        "", **_flags("--node-id", help="This node's name in the cluster (default: its Raft address)."),
    )
    raft_addr: str = Field(
        "127.0.0.1:7222", **_flags("--raft-addr", help="host:port this node's Raft peers reach it on."),
    )
    cluster_password: str | None = Field(
        None,
        **_flags("--cluster-password",
                 help="Password every member shares: Raft traffic is encrypted and authenticated with it, routes "
                 "must prove it to join the mesh, and `mq9cluster status` and `mq9cluster leave` must give it "
                 "too (route traffic stays unencrypted)."),
    )
    peers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        **_flags("--peers", help="The other members' Raft addresses, comma-separated (this node's own is ignored)."),
    )
    auto_rebuild: bool = Field(
        True,
        **_flags("--auto-rebuild/--no-auto-rebuild",
                 help="A member whose data is damaged moves it aside, has its peers remove it and joins again "
                 "with an empty data dir (off: it refuses to serve until the operator acts)."),
    )
    cluster_addr: str = Field(
        "",
        **_flags("--cluster", "--cluster-addr", "--cluster_listen",
                 help="host:port the route listener binds for core NATS between nodes (empty: a standalone node)."),
    )
    routes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        **_flags("--routes", help="Other nodes' route addresses, comma-separated (this node's own is ignored); "
                 "more are discovered from them."),
    )
    client_advertise: str = Field(
        "",
        **_flags("--client-advertise", "--client_advertise",
                 help="host:port clients are told to reach this node at (default: the client address, or the "
                 "host of cluster_addr/raft_addr with the client port when that address is 0.0.0.0)."),
    )
    mailbox_max_ttl: int = Field(
        31536000, ge=0, **_flags("--mailbox-max-ttl", help="Largest mailbox TTL in seconds a create may ask for (0 = no limit)."),
    )
    max_creates_per_second: float = Field(
        0, ge=0,
        **_flags("--max-creates-per-second",
                 help="Mailbox creates one connection may make a second, in bursts of up to 10x that (at least 1); "
                 "more get an error reply (0 = no limit)."),
    )
    mailbox_max_bytes: int = Field(
        0, ge=0,
        **_flags("--mailbox-max-bytes", help="Most bytes (payloads and headers) one mailbox stores; a send that "
                 "would pass it gets an error reply and nothing stored is dropped (0 = no limit)."),
    )
    max_mailboxes: int = Field(
        0, ge=0,
        **_flags("--max-mailboxes", help="Most mailboxes that may exist; a create past it gets an error reply "
                 "(0 = no limit)."),
    )
    max_stored_bytes: int = Field(
        0, ge=0,
        **_flags("--max-stored-bytes", help="Most bytes (payloads and headers) all mailboxes together store on a "
                 "node; a send that would pass it gets an error reply (0 = no limit)."),
    )
    expiry_interval: float = Field(
        1.0, gt=0, **_flags("--expiry-interval", help="Seconds between the leader's scans for expired mailboxes."),
    )
    legacy_clock: bool = Field(
        False,
        **_flags("--legacy-clock", help="Propose no clock reports, and let the leader's own clock expire mailboxes "
                 "while no cluster clock is known, as releases before the cluster clock did: only on every node "
                 "while rolling a cluster onto this release (an older node stops on a clock report); roll "
                 "again without it once all run this release."),
    )
    commit_max_wait: float = Field(
        0.001, ge=0, le=1,
        **_flags("--commit-max-wait", help="Seconds group commit waits to gather more sends into one Raft entry."),
    )
    commit_max_ops: int = Field(
        2000, ge=1, **_flags("--commit-max-ops", help="Most mailbox operations carried by one Raft entry."),
    )
    raft_snapshot_entries: int = Field(
        5000, ge=10,
        **_flags("--raft-snapshot-entries", help="Raft log entries kept before a snapshot of the store compacts the log."),
    )
    commit_max_in_flight: int = Field(
        2, ge=1, le=64,
        **_flags("--commit-max-in-flight", help="Raft entries group commit keeps in flight at once."),
    )
    auth_token: str | None = Field(
        None, **_flags("--auth", help="Token clients must send in CONNECT (a bcrypt hash is accepted)."),
    )
    user: str | None = Field(None, **_flags("--user", help="User name clients must send in CONNECT (with --pass)."))
    password: str | None = Field(
        None, **_flags("--pass", "--password", help="Password for --user (a bcrypt hash is accepted)."),
    )
    auth_timeout: float = Field(
        2.0, gt=0, **_flags("--auth-timeout", help="Seconds a client has to send CONNECT when auth is on."),
    )
    tls: bool = Field(False, **_flags("--tls", help="Require TLS from clients (needs --tlscert and --tlskey)."))
    tls_cert: Path | None = Field(None, **_flags("--tlscert", help="Server certificate file (PEM) for client TLS."))
    tls_key: Path | None = Field(None, **_flags("--tlskey", help="Private key file (PEM) of --tlscert."))
    tls_ca_cert: Path | None = Field(
        None, **_flags("--tlscacert", help="CA certificate file (PEM) client certificates are checked against."),
    )
    tls_verify: bool = Field(
        False, **_flags("--tlsverify", help="Require and verify a client certificate (needs --tlscacert)."),
    )

    @field_validator("host")
    @classmethod
    def _host_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("peers", "routes", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("raft_addr")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port")
        return value

    @field_validator("cluster_addr", "client_advertise")
    @classmethod
    def _optional_host_port(cls, value: str) -> str:
        return cls._host_port(_without_scheme(value)) if value else value

    @field_validator("peers", "routes")
    @classmethod
    def _each_host_port(cls, value: list[str]) -> list[str]:
        return [cls._host_port(_without_scheme(addr)) for addr in value]

    @property
    def node_name(self) -> str:
        """This node's name: ``node_id``, or its Raft address when none is given."""
        return self.node_id or self.raft_addr

    @property
    def other_peers(self) -> list[str]:
        """The peers without this node's own address."""
        return [peer for peer in dict.fromkeys(self.peers) if peer != self.raft_addr]

    def _reachable_host(self, host: str) -> str:
        """``host``, or when it is a wildcard address the host of cluster_addr/raft_addr that is not."""
        for candidate in (host, self.cluster_addr.rpartition(":")[0], self.raft_addr.rpartition(":")[0]):
            if candidate and candidate not in _ANY_HOST:
                return candidate
        return socket.gethostname()

    def client_url(self, port: int) -> str:
        """``host:port`` clients are told to reach this node at, given the bound client port."""
        if self.client_advertise:
            return self.client_advertise
        host = self._reachable_host(self.host)
        return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"

    @property
    def cluster_listen(self) -> tuple[str, int]:
        """(host, port) the route listener binds."""
        host, _, port = self.cluster_addr.rpartition(":")
        return host.strip("[]"), int(port)

    def route_url(self) -> str:
        """``host:port`` other nodes reach this node's route listener at (what it advertises)."""
        host, _, port = self.cluster_addr.rpartition(":")
        return f"{self._reachable_host(host)}:{port}"

    @property
    def other_routes(self) -> list[str]:
        """The configured routes without this node's own route address."""
        own = {self.cluster_addr, self.route_url()} if self.cluster_addr else set()
        return [addr for addr in dict.fromkeys(self.routes) if addr not in own]

    @model_validator(mode="after")
    def _auth_and_tls_consistent(self) -> "Settings":
        if self.auth_token and (self.user or self.password):
            raise ValueError("give either a token (--auth) or a user and password (--user/--pass), not both")
        if bool(self.user) != bool(self.password):
            raise ValueError("--user and --pass go together")
        if self.client_tls and not (self.tls_cert and self.tls_key):
            raise ValueError("TLS needs a certificate and its key (--tlscert and --tlskey)")
        if self.tls_verify and not self.tls_ca_cert:
            raise ValueError("--tlsverify needs the CA that signs client certificates (--tlscacert)")
        return self

    @property
    def client_tls(self) -> bool:
        """Whether clients must speak TLS (nats-server: --tlsverify implies --tls)."""
        return self.tls or self.tls_verify

    @property
    def auth_required(self) -> bool:
        """Whether clients must authenticate in CONNECT."""
        return bool(self.auth_token or self.user)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (passed as init values) beat the environment, which beats the file."""
        return (init_settings, env_settings, _FileSource(settings_cls))

    @property
    def log_level_number(self) -> int:
        """The level as a ``logging`` number; trace is below debug."""
        return {"trace": 5, "debug": 10, "info": 20, "warning": 30, "error": 40}[self.log_level]


_ANY_HOST = ("0.0.0.0", "::", "[::]", "")


def _without_scheme(addr: str) -> str:
    """``host:port`` from an address that may be written as a URL (``nats-route://host:port``)."""
    return addr.split("://", 1)[-1].rstrip("/")


class _FileSource(PydanticBaseSettingsSource):
    """Values from the config file named by ``load_settings`` (empty when there is none)."""

    path: Path | None = None

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ below returns the whole mapping at once

    def __call__(self) -> dict[str, Any]:
        return read_config_file(self.path) if self.path else {}


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a TOML (or ``.json``) config file into option names; keys may use - or _."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ConfigError(f"config file {path} is not valid {kind}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a table of options")
    return {key.replace("-", "_"): value for key, value in raw.items()}


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build Settings from all sources; flags whose value is None are treated as not given."""
    given = {name: value for name, value in flags.items() if value is not None}
    _FileSource.path = config_file
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    finally:
        _FileSource.path = None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad option, naming the option as the user spells it."""
    lines = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown option '{name}'")
        elif not error["loc"]:  # a rule over several options: its message names them
            lines.append(str(error["msg"]).removeprefix("Value error, "))
        else:
            lines.append(f"option '{name}': {error['msg']} (got {error.get('input')!r})")
    return "invalid settings: " + "; ".join(lines)


def reference_markdown() -> str:
    """The configuration reference (docs/configuration.md), generated from the Settings model."""
    rows = []
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra or {}
        flags = ", ".join(f"`{flag}`" for flag in extra.get("flags", []))
        default = f"`{field.default}`" if field.default_factory is None else (
            "(host name)" if name == "server_name" else "(none)")
        rows.append(f"| `{name}` | {flags} | `MQ9_{name.upper()}` | {default} | {field.description} |")
    return "\n".join([
        "# Configuration reference",
        "",
        "Generated from `mq9cluster/config.py` by `mq9cluster config-reference`; a test keeps this",
        "file equal to that output.",
        "",
        "Sources, lowest precedence first: defaults, the config file (`-c FILE`: TOML, or JSON when",
        "the name ends in `.json`; keys are the option names below, `-` or `_`), `MQ9_*` environment",
        "variables, command-line flags. Unknown keys and bad values stop the start with a message",
        "that names the option.",
        "",
        "| option | flags | environment | default | meaning |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "`mq9cluster start` also takes `-c/--config FILE`, `-D` (debug log), `-V` (trace log) and",
        "`-DV`, as nats-server does.",
        "",
    ])
