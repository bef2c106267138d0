"""Settings: precedence (defaults < file < MQ9_* env < flags) and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mq9cluster.config import Settings, load_settings, reference_markdown
from mq9cluster.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_match_nats_server():
    s = load_settings()
    assert (s.host, s.port, s.http_port, s.max_payload, s.max_control_line) == ("0.0.0.0", 4222, 8222, 1048576, 4096)
    assert (s.ping_interval, s.ping_max, s.max_pending) == (120.0, 2, 64 * 1048576)
    assert s.data_dir == Path("data")


def test_precedence_file_env_flags(tmp_path, monkeypatch):
    config = tmp_path / "mq9.toml"
    config.write_text('port = 1111\nhttp-port = 2222\nserver_name = "from-file"\nmax_payload = 3333\n')
    monkeypatch.setenv("MQ9_HTTP_PORT", "4444")
    monkeypatch.setenv("MQ9_MAX_PAYLOAD", "5555")
    s = load_settings(config, max_payload=6666, port=None)
    assert s.port == 1111  # file (flag given as None = not given)
    assert s.server_name == "from-file"
    assert s.http_port == 4444  # env beats file
    assert s.max_payload == 6666  # flag beats env


def test_json_config_file(tmp_path):
    config = tmp_path / "mq9.json"
    config.write_text('{"port": 7777}')
    assert load_settings(config).port == 7777


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = 70000", "option 'port'"),
        ("bogus = 1", "unknown option 'bogus'"),
        ("port = [", "is not valid TOML"),
        ('log_level = "loud"', "option 'log_level'"),
    ],
)
def test_bad_config_file_names_the_problem(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(config)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.toml")


def test_bad_env_value_names_the_option(monkeypatch):
    monkeypatch.setenv("MQ9_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="option 'port'"):
        load_settings()


@pytest.mark.parametrize("flags, message", [
    ({"auth_token": "t", "user": "u", "password": "p"}, "either a token"),
    ({"user": "alice"}, "--user and --pass go together"),
    ({"tls": True}, "--tlscert and --tlskey"),
    ({"tls_verify": True, "tls_cert": "c.pem", "tls_key": "k.pem"}, "--tlscacert"),
])
def test_inconsistent_auth_and_tls_options_are_refused(flags, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(**flags)


def test_auth_options_turn_auth_on():
    assert not load_settings().auth_required
    assert load_settings(user="alice", password="secret").auth_required
    assert load_settings(auth_token="t").auth_required


def test_every_setting_has_flags_and_help():
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert (field.json_schema_extra or {}).get("flags"), name


def test_configuration_doc_is_generated_from_settings():
    assert (ROOT / "docs" / "configuration.md").read_text() == reference_markdown()


def test_route_options_accept_nats_server_spellings():
    routes = "nats-route://10.0.0.2:6222/, 10.0.0.1:6222,10.0.0.2:6222"
    s = load_settings(cluster_addr="nats://0.0.0.0:6222", routes=routes, raft_addr="10.0.0.1:7222")
    assert s.cluster_addr == "0.0.0.0:6222" and s.cluster_listen == ("0.0.0.0", 6222)
    assert s.route_url() == "10.0.0.1:6222"  # a wildcard bind advertises the Raft address's host
    assert s.other_routes == ["10.0.0.2:6222"]  # its own address dropped, duplicates folded
    with pytest.raises(ConfigError, match="option 'routes'"):
        load_settings(routes="nohost")
    with pytest.raises(ConfigError, match="option 'cluster_addr'"):
        load_settings(cluster_addr="6222")


def test_client_url_defaults_to_a_reachable_host():
    assert load_settings(host="127.0.0.5").client_url(4222) == "127.0.0.5:4222"
    assert load_settings(host="::1").client_url(4222) == "[::1]:4222"
    assert load_settings(cluster_addr="10.0.0.3:6222").client_url(4222) == "10.0.0.3:4222"
    assert load_settings(raft_addr="10.0.0.4:7222").client_url(4222) == "10.0.0.4:4222"
    assert load_settings(client_advertise="nats.example:14222").client_url(4222) == "nats.example:14222"
