"""Unit tests with no socket: signing vectors, backoff, config, pc_id."""
from __future__ import annotations

import pytest

from octohub_sync import ConfigError, load_settings, signing
from octohub_sync.backoff import Backoff
from octohub_sync.config import PUBLIC_EXAMPLE_KEY
from octohub_sync.identity import machine_pc_id

VECTOR_KEY = PUBLIC_EXAMPLE_KEY


# -- signing (docs/protocol.md §1, §2 vectors) --------------------------------------------------

def test_api_signature_vector_with_params() -> None:
    text = signing.api_string_to_sign("get", "/node/ws", {"pc_id": "node_abc123def456"}, 1632123456, "1632123456999")
    assert text == "GET&/node/ws&pc_id=node_abc123def456&1632123456&1632123456999"
    assert signing.sign_api(VECTOR_KEY, text) == "9V8vszyC1JvWKUxyFJvHZ1s/QoxXMj3s3pZWI8ABHVY="


def test_api_signature_vector_empty_params_keeps_separators() -> None:
    text = signing.api_string_to_sign("GET", "/node/ws", {}, 1632123456, "n1")
    assert text == "GET&/node/ws&&1632123456&n1"
    assert signing.sign_api(VECTOR_KEY, text) == "pn5pfiIa38Rq4m8gklkmbLtl+7wxAhtwxH0S+jANvWg="


def test_params_sorted_and_raw() -> None:
    text = signing.api_string_to_sign("GET", "/x", {"b": "2 3", "a": "é&"}, 1, "n")
    assert text == "GET&/x&a=é&&b=2 3&1&n"


def test_ws_signature_vector() -> None:
    assert signing.sign_ws(VECTOR_KEY, "node_abc123def456", 1632123456) == (
        "c116efe04a6bca8f3868466387ba4dff3c08eee2f92955c8b04092fdb9b11038")


def test_headers_fresh_per_request() -> None:
    a = signing.api_headers(VECTOR_KEY, "GET", "/node/ws", {"pc_id": "p"})
    b = signing.api_headers(VECTOR_KEY, "GET", "/node/ws", {"pc_id": "p"})
    assert a["X-Nonce"] != b["X-Nonce"]
    assert signing.verify_api(VECTOR_KEY, "GET", "/node/ws", {"pc_id": "p"}, a)


def test_verify_rejects_old_timestamp_and_wrong_key() -> None:
    old = signing.api_headers(VECTOR_KEY, "GET", "/node/ws", {}, timestamp=1000)
    assert not signing.verify_api(VECTOR_KEY, "GET", "/node/ws", {}, old)
    assert not signing.verify_ws("other-key", "p", "1632123456", signing.sign_ws(VECTOR_KEY, "p", 1632123456),
                                 now=1632123456)


def test_redact_masks_signatures() -> None:
    text = "ws://h:1/ws/node?pc_id=a&timestamp=1&signature=abc123 and X-Signature: 9V8v+/= end"
    clean = signing.redact(text)
    assert "abc123" not in clean and "9V8v" not in clean and "pc_id=a" in clean


# -- backoff ------------------------------------------------------------------------------------

def test_first_retry_is_short_and_random() -> None:
    b = Backoff(interval=5, max_interval=60)
    assert b.delay(0, rand=lambda: 0.0) == 0
    assert b.delay(0, rand=lambda: 0.999) < 1.0


def test_backoff_grows_and_caps_with_bounded_jitter() -> None:
    b = Backoff(interval=5, max_interval=60)
    assert [b.nominal(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    for n in range(1, 200):
        assert b.nominal(n) / 2 <= b.delay(n, rand=lambda: 0.0) <= b.delay(n, rand=lambda: 0.999) <= b.nominal(n)


# -- config -------------------------------------------------------------------------------------

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
    with pytest.raises(ConfigError, match="OCTOHUB_SERVER_HOSTNAME"):
        load_settings({"server_hostname": "x"}, environ={})


def test_missing_env_file_is_an_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="--env-file"):
        load_settings(env_file=tmp_path / "nope.env", environ={})


def test_empty_value_means_default() -> None:
    assert load_settings(environ={"OCTOHUB_PC_ID": "", "OCTOHUB_SERVER_PORT": ""}).server_port == 8080


# -- pc_id --------------------------------------------------------------------------------------

def test_pc_id_stable_and_distinct_per_instance() -> None:
    a = machine_pc_id(hostname="h1", mac="001122334455")
    assert a == machine_pc_id(hostname="h1", mac="001122334455")
    assert a.startswith("node_") and len(a) == 17 and int(a[5:], 16) >= 0
    assert a != machine_pc_id(hostname="h2", mac="001122334455")
    assert a != machine_pc_id("worker2", hostname="h1", mac="001122334455")
    assert machine_pc_id() == machine_pc_id()  # this machine, two "starts"


def test_env_example_lists_every_setting_with_its_default() -> None:
    import re
    from pathlib import Path

    from octohub_sync.config import Settings, env_name, setting_names

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
