"""The doctor (``--check``): config, API, WebSocket and clock checks against the real local hub,
and the step it names when one fails."""
from __future__ import annotations

import io
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest
import websocket

from octohub_sync import load_settings
from octohub_sync.doctor import _ws_hint, run_check
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
