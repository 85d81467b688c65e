"""The doctor (``--check``): config, API, WebSocket and clock checks against the real local hub,
and the step it names when one fails."""
from __future__ import annotations

import concurrent.futures
import contextlib
import io
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
import websocket

from octohub_sync import load_settings
from octohub_sync._config.settings import PUBLIC_EXAMPLE_KEY
from octohub_sync.cli._doctor import _ws_hint, run_check
from octohub_sync.hub import LocalHub

from .conftest import FAST, KEY, free_port

ROOT = Path(__file__).resolve().parent.parent


def run_cli_check(*flags: str, env_file: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_") and "proxy" not in k.lower()}
    return subprocess.run(
        [sys.executable, str(ROOT / "run_node.py"), "--check", "--env-file", str(env_file),
         "--connect-timeout", "3", *flags],
        cwd=str(env_file.parent), env=env, capture_output=True, text=True, timeout=9)


@pytest.fixture
def empty_env(tmp_path: Path) -> Path:
    path = tmp_path / "empty.env"
    path.write_text("")
    return path


def test_check_passes_against_the_hub(hub: LocalHub, empty_env: Path) -> None:
    done = run_cli_check("--server-host", "127.0.0.1", "--server-port", str(hub.api_port),
                         "--signature-key", KEY, env_file=empty_env)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "all checks passed" in done.stdout
    assert "OCTOHUB_SIGNATURE_KEY" in done.stdout and "[flag]" in done.stdout
    assert KEY not in output
    assert re.search(r"signature=(?!\*\*\*)", output) is None
    # The check connected under its own id, so it cannot knock a running node off.
    assert all(c["pc_id"].endswith("_check") for c in hub.connections)


def test_check_wrong_key_names_the_api_step(hub: LocalHub, empty_env: Path) -> None:
    wrong = "wrong-key-zzzz-98765"
    done = run_cli_check("--server-host", "127.0.0.1", "--server-port", str(hub.api_port),
                         "--signature-key", wrong, env_file=empty_env)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("FAILED at step 'API'") and "OCTOHUB_SIGNATURE_KEY" in last and "clock" in last
    assert wrong not in output and KEY not in output


def test_check_closed_port_names_the_api_step(empty_env: Path) -> None:
    done = run_cli_check("--server-host", "127.0.0.1", "--server-port", str(free_port()),
                         "--signature-key", KEY, env_file=empty_env)
    assert done.returncode != 0
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("FAILED at step 'API'") and "OCTOHUB_SERVER_PORT" in last
    assert KEY not in done.stdout + done.stderr


def check_settings(hub: LocalHub, **overrides: Any) -> Any:
    values = {"server_host": "127.0.0.1", "server_port": hub.api_port, "ws_port": hub.ws_port,
              "signature_key": KEY, "connect_timeout": FAST["connect_timeout"], "pc_id": "node_doctor"}
    values.update(overrides)
    return load_settings(values, env_file=False, environ={})


def in_process_check(settings: Any) -> tuple[int, str]:
    out = io.StringIO()
    return run_check(settings, out=out), out.getvalue()


def test_check_direct_mode(hub: LocalHub) -> None:
    code, output = in_process_check(check_settings(hub, connect_mode="direct"))
    assert code == 0, output
    assert "API: skipped" in output and "server_time" in output and KEY not in output


def test_check_websocket_refusing_the_signature(hub: LocalHub) -> None:
    hub.ws_fault = "401"
    code, output = in_process_check(check_settings(hub))
    last = output.strip().splitlines()[-1]
    assert code != 0 and last.startswith("FAILED at step 'WebSocket'") and "HTTP 401" in last
    assert "OCTOHUB_SIGNATURE_KEY" in last and KEY not in output


def test_check_nothing_on_the_ws_port(hub: LocalHub) -> None:
    code, output = in_process_check(check_settings(hub, connect_mode="direct", ws_port=free_port()))
    last = output.strip().splitlines()[-1]
    assert code != 0 and last.startswith("FAILED at step 'WebSocket'") and "OCTOHUB_WS_PORT" in last


def test_check_missing_key(hub: LocalHub) -> None:
    code, output = in_process_check(check_settings(hub, signature_key=None))
    assert code != 0 and output.strip().splitlines()[-1].startswith("FAILED at step 'key'")


def test_check_tls_with_private_ca(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with LocalHub(KEY, ssl_context=server, ws_url_host="localhost") as tls_hub:
        code, output = in_process_check(check_settings(tls_hub, server_host="localhost", tls=True, ca_file=str(ca_file)))
        assert code == 0, output
        assert "GET https://localhost:" in output and "wss://localhost:" in output
        code, output = in_process_check(check_settings(tls_hub, server_host="localhost", tls=True, connect_mode="direct"))
        last = output.strip().splitlines()[-1]
        assert code != 0 and last.startswith("FAILED at step 'WebSocket'") and "OCTOHUB_CA_FILE" in last


def hint(exc: BaseException, api_url: Optional[str] = None, ws_url: str = "ws://127.0.0.1:8000/ws/node") -> str:
    settings = load_settings({"signature_key": KEY, "api_url": api_url}, env_file=False, environ={})
    return _ws_hint(exc, settings, ws_url, "host:8000")


def test_check_hints() -> None:
    assert "OCTOHUB_WS_HOST" in hint(ConnectionRefusedError(), "http://10.1.2.3:8080", "ws://localhost:8000/ws/node")
    assert "OCTOHUB_CA_FILE" in hint(ssl.SSLCertVerificationError("certificate verify failed"))
    assert "firewall" in hint(websocket.WebSocketTimeoutException("timed out"))
    assert "clock" in hint(websocket.WebSocketBadStatusException("Handshake status %d %s", 401, "Unauthorized"))


def test_check_hints_for_every_kind_of_failure() -> None:
    bad_status = websocket.WebSocketBadStatusException("Handshake status %d %s", 500, "Internal Server Error")
    assert "host:8000 is the OctoHub WebSocket server" in hint(bad_status)
    assert "cannot resolve 127.0.0.1" in hint(socket.gaierror(-2, "Name or service not known"))
    assert "the address the API handed out" in hint(ConnectionRefusedError())
    direct = load_settings({"signature_key": KEY, "connect_mode": "direct"}, env_file=False, environ={})
    assert "OCTOHUB_WS_PORT" in _ws_hint(ConnectionRefusedError(), direct, "ws://127.0.0.1:8000/ws/node", "host:8000")
    assert "firewalls" in hint(OSError("no route to host"))


def test_check_on_an_ascii_terminal_with_the_public_key_and_a_clock_ahead() -> None:
    with LocalHub(PUBLIC_EXAMPLE_KEY, clock_offset=120) as hub:
        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding="ascii")
        code = run_check(check_settings(hub, signature_key=PUBLIC_EXAMPLE_KEY), out=out)
        out.flush()
    output = raw.getvalue().decode("ascii")  # nothing the terminal cannot show
    assert code == 0, output
    assert "[ok] key:" in output and "[ok] WebSocket:" in output
    assert "[warn] it is the public example key" in output
    assert re.search(r"\[warn\] clock: the hub's clock differs from this machine's by \+1[12]\d\.\d s", output)
    assert "synchronise the clock (NTP)" in output


@contextlib.contextmanager
def other_websocket_service(handler: Callable[[Any], None]) -> Iterator[int]:
    """A WebSocket server that is not an OctoHub hub, on a free port."""
    from websockets.sync.server import serve

    server = serve(handler, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, name="test-other-ws", daemon=True)
    thread.start()
    try:
        yield int(server.socket.getsockname()[1])
    finally:
        server.shutdown()
        thread.join(5)


def test_check_against_a_websocket_service_that_never_confirms(hub: LocalHub) -> None:
    def chatty(ws: Any) -> None:
        ws.send("not json")
        ws.send('{"type": "hello"}')
        for _ in ws:  # until the doctor gives up and closes
            pass

    with other_websocket_service(chatty) as port:
        started = time.monotonic()
        code, output = in_process_check(check_settings(hub, connect_mode="direct", ws_port=port, connect_timeout=0.5))
    last = output.strip().splitlines()[-1]
    assert code != 0 and last.startswith("FAILED at step 'WebSocket': no 'connected' message within 0.5 s")
    assert "not another WebSocket service" in last
    assert time.monotonic() - started < 5


def test_check_against_a_websocket_service_that_closes_at_once(hub: LocalHub) -> None:
    def rude(ws: Any) -> None:
        ws.close(1008, "go away")

    with other_websocket_service(rude) as port:
        code, output = in_process_check(check_settings(hub, connect_mode="direct", ws_port=port))
    last = output.strip().splitlines()[-1]
    assert code != 0 and last.startswith("FAILED at step 'WebSocket': the hub closed the connection before confirming it")


#: A bad value for every setting (tests/test_doctor.py::test_check_never_ends_in_a_traceback checks the list is whole).
BAD_VALUES = dict(
    server_host="http://127.0.0.1", server_port="http", ws_port="0", ws_host="127.0.0.1:8000",
    api_url="localhost:8080", connect_mode="websocket", signature_key_file="/nonexistent/key",
    ws_signature_key_file="/nonexistent/key", tls="maybe", ca_file="/nonexistent/ca.pem",
    tls_insecure="2", proxy="ftp://proxy:21", pc_id="a b", instance="a/b", reconnect_interval="0",
    reconnect_max_interval="-1", max_reconnect_attempts="1.5", stable_after="x", connect_timeout="inf",
    ping_interval="nan", ping_timeout="-1", hub_read_timeout="x", max_workers="0", max_pending="-1",
    task_timeout="x", cancel_grace="-1", progress_interval="-1", shutdown_timeout="x", outbox_size="0",
    result_cache_size="0", max_tasks="-1", max_memory="x", max_uptime="-1",
    max_message_bytes="0", max_result_bytes="-1", log_task_errors="full", status_interval="-1",
    metrics_port="70000", metrics_host="a b", log_level="LOUD", log_format="xml", app="1mod",
    server_host_with_port="127.0.0.1:8080", server_host_with_path="hub.example/api",
    ca_file_with_garbage="{tmp}/a-file",  # exists, holds no certificate: the node would crash on its first connect
)
#: Settings any text is valid for (a key; a state directory the node creates): odd values still end without a traceback.
ANY_TEXT = dict(signature_key="ключ é\t", ws_signature_key="ключ", state_dir="{tmp}/a-file")


def test_check_never_ends_in_a_traceback(tmp_path: Path) -> None:
    from octohub_sync._config.settings import setting_names
    assert set(setting_names()) <= set(BAD_VALUES) | set(ANY_TEXT)
    (tmp_path / "a-file").write_text("not a certificate\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_") and "proxy" not in k.lower()}
    base.update(OCTOHUB_SIGNATURE_KEY=KEY, OCTOHUB_SERVER_HOST="127.0.0.1", OCTOHUB_SERVER_PORT=str(free_port()),
                OCTOHUB_CONNECT_TIMEOUT="2", OCTOHUB_STATE_DIR=str(tmp_path / "state"))

    def check(name: str, value: str) -> tuple[int, str]:
        setting = name.split("_with_")[0]
        env = dict(base, **{"OCTOHUB_" + setting.upper(): value.format(tmp=tmp_path)})
        if setting == "signature_key_file":
            del env["OCTOHUB_SIGNATURE_KEY"]
        run = subprocess.run([sys.executable, str(ROOT / "run_node.py"), "--check"], cwd=str(tmp_path), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        return run.returncode, run.stdout

    # Three at a time: 44 interpreters at once would starve the tests running beside this one.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        runs = {name: pool.submit(check, name, value) for name, value in {**BAD_VALUES, **ANY_TEXT}.items()}
    for name, future in runs.items():
        code, out = future.result()
        assert "Traceback" not in out, (name, out)
        if name in BAD_VALUES:
            assert code == 2, (name, out)
            assert "configuration error: OCTOHUB_" + name.split("_with_")[0].upper() in out, (name, out)
        else:
            assert code == 1, (name, out)  # nothing listens: the API step fails, with its reason


@pytest.mark.parametrize("value, names", [
    ("http://127.0.0.1", "OCTOHUB_API_URL"), ("https://hub.example:8443/", "OCTOHUB_API_URL"),
    ("127.0.0.1:8080", "put 8080 in OCTOHUB_SERVER_PORT"), ("hub.example:8080", "put 8080 in OCTOHUB_SERVER_PORT"),
    ("[::1]:8080", "put 8080 in OCTOHUB_SERVER_PORT"), ("hub.example/api", "OCTOHUB_API_URL"),
])
def test_a_url_or_a_port_in_the_host_is_a_config_error_naming_where_it_belongs(value: str, names: str) -> None:
    from octohub_sync.exceptions import ConfigError
    with pytest.raises(ConfigError, match="OCTOHUB_SERVER_HOST=.*" + re.escape(names)):
        load_settings({"server_host": value}, env_file=False, environ={})


@pytest.mark.parametrize("value", ["::1", "[::1]"])
def test_ipv6_literals_stay_valid_hosts(value: str) -> None:
    settings = load_settings({"server_host": value, "server_port": 8080}, env_file=False, environ={})
    assert settings.api_base == "http://[::1]:8080"


def test_the_sources_check_prints_are_the_ones_the_docs_name(hub: LocalHub, tmp_path: Path) -> None:
    env_file = tmp_path / "node.env"
    env_file.write_text(f"OCTOHUB_SIGNATURE_KEY={KEY}\n")
    done = run_cli_check("--server-host", "127.0.0.1", "--server-port", str(hub.api_port), env_file=env_file)
    printed = set(re.findall(r"^  OCTOHUB_\w+\s+= .* \[([a-z. ]+)\]$", done.stdout, re.M))
    assert {"flag", ".env", "default", "program default"} <= printed, done.stdout
    docs = (ROOT / "docs" / "running-nodes.md").read_text()
    sentence = docs[docs.index("It prints every setting with its source"):][:200]
    named = set(re.findall(r"`\[([a-z. ]+)\]`", sentence))
    assert printed <= named, (printed, named)


def test_check_notes_an_unknown_octohub_name(hub: LocalHub, tmp_path: Path) -> None:
    env_file = tmp_path / "node.env"
    env_file.write_text(f"OCTOHUB_SIGNATURE_KEY={KEY}\nOCTOHUB_MAX_WORKER=16\n")
    done = run_cli_check("--server-host", "127.0.0.1", "--server-port", str(hub.api_port), env_file=env_file)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("OCTOHUB_MAX_WORKER in .env is not a setting; it is ignored (did you mean OCTOHUB_MAX_WORKERS?)"
            in done.stdout)
    # And again at the end, where a reader looks: the check passed, but not with the setting meant.
    assert done.stdout.rstrip().splitlines()[-1] == ("but: OCTOHUB_MAX_WORKER in .env is not a setting; it is "
                                                     "ignored (did you mean OCTOHUB_MAX_WORKERS?)")
