"""Settings: precedence, one ConfigError naming the variable and the value, env.example in step with the fields."""
from __future__ import annotations

import pytest

from octohub_sync import ConfigError, load_settings


def test_precedence_override_env_file_environment_default(tmp_path) -> None:
    env_file = tmp_path / "node.env"
    env_file.write_text("OCTOHUB_SERVER_HOST=from-file\nOCTOHUB_SERVER_PORT=9001\n")
    environ = {"OCTOHUB_SERVER_HOST": "from-env", "OCTOHUB_WS_PORT": "9002", "OCTOHUB_SERVER_PORT": "1"}
    s = load_settings({"server_port": 9003}, env_file=env_file, environ=environ)
    assert (s.server_host, s.server_port, s.ws_port, s.ping_interval) == ("from-file", 9003, 9002, 30.0)
    assert s.sources["server_host"] == ".env" and s.sources["server_port"] == "override"
    assert s.sources["ws_port"] == "environment" and "ping_interval" not in s.sources


def test_dot_env_in_working_directory(tmp_path, monkeypatch) -> None:
    (tmp_path / ".env").write_text("OCTOHUB_MAX_WORKERS=3\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ={}).max_workers == 3


@pytest.mark.parametrize("name, value", [
    ("OCTOHUB_SERVER_PORT", "80a"), ("OCTOHUB_SERVER_PORT", "70000"), ("OCTOHUB_PING_INTERVAL", "-1"),
    ("OCTOHUB_MAX_WORKERS", "0"), ("OCTOHUB_MAX_WORKERS", "2.5"), ("OCTOHUB_LOG_LEVEL", "LOUD"),
    ("OCTOHUB_TLS", "maybe"), ("OCTOHUB_PC_ID", "node x"), ("OCTOHUB_INSTANCE", "a/b"),
    ("OCTOHUB_CONNECT_MODE", "udp"), ("OCTOHUB_API_URL", "ftp://x"), ("OCTOHUB_CA_FILE", "/no/such/file"),
    ("OCTOHUB_PING_TIMEOUT", "30"), ("OCTOHUB_RECONNECT_INTERVAL", "nan"),
])
def test_bad_value_names_variable_and_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={name: value})
    assert str(info.value).startswith(f"{name}=")
    assert repr(value) in str(info.value)


def test_bad_key_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"signature_key": "s3cr3t-value", "ping_timeout": 99}, environ={})
    assert "s3cr3t-value" not in str(info.value)
    assert "s3cr3t-value" not in repr(load_settings({"signature_key": "s3cr3t-value"}, environ={}))


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^server_hostname: no such setting \(did you mean server_host\?\)"):
        load_settings({"server_hostname": "x"}, environ={})


def test_a_mistyped_keyword_is_named_with_the_one_meant_and_no_value() -> None:
    from octohub_sync import NodeWebSocketClient
    with pytest.raises(ConfigError) as info:
        NodeWebSocketClient(signature_key="k", max_worker=16, env_file=False)
    assert str(info.value) == "max_worker: no such setting (did you mean max_workers?)"
    with pytest.raises(ConfigError) as info:
        NodeWebSocketClient(signature_key="k", signatur_key="s3cr3t", env_file=False)
    assert "s3cr3t" not in str(info.value) and "OCTOHUB_" not in str(info.value)


def test_an_unknown_octohub_name_in_the_environment_or_env_file_is_a_warning(tmp_path, caplog) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OCTOHUB_SEVER_HOST=hub.example\n")
    settings = load_settings(env_file=env_file, environ={"OCTOHUB_MAX_WORKER": "16", "OCTOHUB_TEST_MAC": "x",
                                                         "OCTOHUB_SIGNATURE_KEY": "k"})
    assert settings.warnings == (
        "OCTOHUB_SEVER_HOST in .env is not a setting; it is ignored (did you mean OCTOHUB_SERVER_HOST?)",
        "OCTOHUB_MAX_WORKER in environment is not a setting; it is ignored (did you mean OCTOHUB_MAX_WORKERS?)",
    )
    from octohub_sync import NodeWebSocketClient
    with caplog.at_level("WARNING", logger="octohub_sync"):
        NodeWebSocketClient(settings=settings)
    logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "did you mean" in r.getMessage()]
    assert len(logged) == 2 and "OCTOHUB_MAX_WORKERS?" in logged[1]


def test_missing_env_file_is_an_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--env-file"):
        load_settings(env_file=tmp_path / "nope.env", environ={})


def test_empty_value_means_default() -> None:
    assert load_settings(environ={"OCTOHUB_PC_ID": "", "OCTOHUB_SERVER_PORT": ""}).server_port == 8080


def test_env_example_lists_every_setting_with_its_default() -> None:
    import re
    from pathlib import Path

    from octohub_sync._config.settings import Settings, env_name, setting_names

    path = Path(__file__).resolve().parent.parent / "env.example"
    lines = re.findall(r"^(?:# )?(OCTOHUB_\w+)=(.*)$", path.read_text(), re.MULTILINE)
    assert [name for name, _ in lines] == [env_name(n) for n in setting_names()]
    # Uncommented, every line must load and give the defaults (the key aside).
    uncommented = load_settings(environ=dict(lines))
    assert uncommented.uses_public_key
    defaults = Settings()
    assert all(getattr(uncommented, n) == getattr(defaults, n) for n in setting_names() if n != "signature_key")
    active = load_settings(env_file=path, environ={"OCTOHUB_MAX_WORKERS": "3"})
    assert active.max_workers == 3  # commented-out defaults do not hide the environment


def test_switches_take_their_words() -> None:
    for word, value in (("on", True), ("YES", True), ("1", True), ("off", False), ("No", False), ("0", False)):
        assert load_settings(environ={"OCTOHUB_TLS": word}).tls is value, word


def test_override_of_the_wrong_type_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="^OCTOHUB_MAX_WORKERS=.*expected a number"):
        load_settings({"max_workers": [4]}, environ={})
    with pytest.raises(ConfigError, match="^OCTOHUB_MAX_WORKERS=True"):
        load_settings({"max_workers": True}, environ={})


def test_reconnect_ceiling_below_the_base_interval_is_refused() -> None:
    with pytest.raises(ConfigError, match="^OCTOHUB_RECONNECT_MAX_INTERVAL='2'"):
        load_settings(environ={"OCTOHUB_RECONNECT_INTERVAL": "5", "OCTOHUB_RECONNECT_MAX_INTERVAL": "2"})


def test_a_ping_interval_past_the_hubs_read_deadline_is_refused() -> None:
    with pytest.raises(ConfigError, match="^OCTOHUB_PING_INTERVAL='60'.*OCTOHUB_HUB_READ_TIMEOUT \\(60\\)"):
        load_settings(environ={"OCTOHUB_PING_INTERVAL": "60", "OCTOHUB_PING_TIMEOUT": "10"})
    # 0 means the node is told of no read deadline: nothing to contradict.
    assert load_settings(environ={"OCTOHUB_PING_INTERVAL": "90", "OCTOHUB_HUB_READ_TIMEOUT": "0"}).ping_interval == 90
