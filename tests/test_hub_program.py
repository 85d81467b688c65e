"""The standalone hub and the demo as a new user meets them: a .env in the directory, a stale key,
no ``hub`` extra installed."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from octohub_sync.client import NodeWebSocketClient
from octohub_sync._config.settings import load_settings
from octohub_sync.cli._doctor import run_check
from octohub_sync.hub import LocalHub

from .conftest import FAST, KEY, wait_until
from .test_console import stop

ROOT = Path(__file__).resolve().parent.parent


def plain_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    env.update(extra)
    return env


def without_websockets(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import ``websockets``, as without the ``hub`` extra."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['websockets'] = None\n")
    return plain_env(PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))


def test_hub_without_websockets_says_what_to_install(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "octohub_sync.hub", "--help"], cwd=tmp_path,
                          env=without_websockets(tmp_path), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("python -m octohub_sync.hub: the local hub needs the websockets package: "
                               "pip install 'octohub_sync[hub]'")
    assert f"or in the clone {ROOT}: pip install -e '.[hub]'" in lines[0]  # this test runs from a clone


def test_demo_without_websockets_says_what_to_install(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "octohub_sync", "--demo"], cwd=tmp_path,
                          env=without_websockets(tmp_path), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "pip install 'octohub_sync[hub]'" in proc.stderr and "pip install -e '.[hub]'" in proc.stderr


def test_readme_flow_env_file_then_standalone_hub_then_node(tmp_path: Path) -> None:
    """In a clone: ``cp env.example .env``, ``python -m octohub_sync.hub``, then the command it prints: served."""
    shutil.copy(ROOT / "env.example", tmp_path / ".env")
    shutil.copy(ROOT / "run_node.py", tmp_path / "run_node.py")
    hub_out = tmp_path / "hub.out"
    with open(hub_out, "w") as out:
        hub = subprocess.Popen([sys.executable, "-m", "octohub_sync.hub", "--api-port", "0", "--ws-port", "0",
                                "--echo-every", "0.2"], cwd=tmp_path, env=plain_env(), stdout=out,
                               stderr=subprocess.DEVNULL)
    node = None
    try:
        assert wait_until(lambda: "--server-port" in hub_out.read_text(), 20)
        text = hub_out.read_text()
        assert "OCTOHUB_SIGNATURE_KEY from ./.env, which a node started here reads too" in text
        assert "mySignatureKey" not in text  # the key is never printed: it may be a real one
        command = next(line.split() for line in text.splitlines() if "run_node.py" in line)
        assert command[:2] == ["python", "run_node.py"]
        node = subprocess.Popen([sys.executable, "run_node.py", *command[2:]], cwd=tmp_path,
                                env=plain_env(OCTOHUB_STATE_DIR="off"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        assert wait_until(lambda: '"status": "completed"' in hub_out.read_text(), 20), hub_out.read_text()
    finally:
        codes = [stop(proc) for proc in (node, hub) if proc is not None]
    assert codes == [0, 0]


def test_generated_key_hint_mentions_key_and_env_file(tmp_path: Path) -> None:
    hub_out = tmp_path / "hub.out"
    with open(hub_out, "w") as out:
        hub = subprocess.Popen([sys.executable, "-m", "octohub_sync.hub", "--api-port", "0", "--ws-port", "0"],
                               cwd=tmp_path, env=plain_env(), stdout=out, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: "beats the environment" in hub_out.read_text(), 20), hub_out.read_text()
    finally:
        assert stop(hub) == 0
    text = hub_out.read_text()
    # No run_node.py here (a pip install, not a clone): the console script is what exists.
    assert "OCTOHUB_SIGNATURE_KEY=" in text and "octohub-node --server-host" in text and "run_node.py" not in text
    assert "a new key on every start: pass --key" in text


def test_401_names_the_env_file_that_beats_the_environment(
        hub: LocalHub, make_node: Callable[..., NodeWebSocketClient], tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("OCTOHUB_SIGNATURE_KEY=yesterdays-key-0123456789\n")
    settings = load_settings({**FAST, "server_host": "127.0.0.1", "server_port": hub.api_port, "pc_id": "node_stale"},
                             env_file=dotenv, environ={"OCTOHUB_SIGNATURE_KEY": KEY})
    client = NodeWebSocketClient(settings=settings)
    try:
        client.start()
        assert wait_until(lambda: "HTTP 401" in (client.stats()["last_error"] or ""), 10)
    finally:
        client.stop(timeout=5)
    error = client.stats()["last_error"]
    assert "OCTOHUB_SIGNATURE_KEY (read from the .env file (./.env or --env-file), which beats the environment)" in error
    assert "yesterdays-key" not in error and KEY not in error


def test_check_direct_mode_401_names_where_the_ws_key_came_from(hub: LocalHub, tmp_path: Path) -> None:
    dotenv = tmp_path / "node.env"
    dotenv.write_text("OCTOHUB_WS_SIGNATURE_KEY=yesterdays-ws-key-012345\n")
    settings = load_settings({"server_host": "127.0.0.1", "server_port": hub.api_port, "ws_port": hub.ws_port,
                              "connect_mode": "direct", "connect_timeout": FAST["connect_timeout"]},
                             env_file=dotenv, environ={"OCTOHUB_SIGNATURE_KEY": KEY})
    out = io.StringIO()
    assert run_check(settings, out=out) != 0
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("FAILED at step 'WebSocket'") and "HTTP 401" in last
    assert "this node signed with OCTOHUB_WS_SIGNATURE_KEY, read from the .env file" in last
    assert "yesterdays-ws-key" not in out.getvalue() and KEY not in out.getvalue()


def test_send_your_own_task_types_from_the_command_line(tmp_path: Path) -> None:
    """``--send TYPE JSON`` (repeatable) and ``--count N``: an ``--app`` node's own types, tried without a script."""
    hub_out = tmp_path / "hub.out"
    with open(hub_out, "w") as out:
        hub = subprocess.Popen([sys.executable, "-m", "octohub_sync.hub", "--api-port", "0", "--ws-port", "0",
                                "--key", KEY, "--send", "reverse", '{"text": "octohub"}',
                                "--send", "word_count", '{"text": "a b a"}', "--count", "2"],
                               cwd=tmp_path, env=plain_env(), stdout=out, stderr=subprocess.DEVNULL)
    node = None
    try:
        assert wait_until(lambda: "--server-port" in hub_out.read_text(), 20)
        assert "4 task(s) waiting for the first node that is ready" in hub_out.read_text()
        command = next(line.split() for line in hub_out.read_text().splitlines() if "--server-port" in line)
        flags = command[command.index("--server-host"):]
        node = subprocess.Popen([sys.executable, str(ROOT / "run_node.py"), "--app", "examples.tasks", *flags],
                                cwd=ROOT, env=plain_env(OCTOHUB_STATE_DIR="off", OCTOHUB_SIGNATURE_KEY=KEY),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: hub_out.read_text().count('"status": "completed"') == 4, 20), hub_out.read_text()
    finally:
        codes = [stop(proc) for proc in (node, hub) if proc is not None]
    assert codes == [0, 0]
    results = [line for line in hub_out.read_text().splitlines() if line.startswith("result:")]
    assert sum('"result": "buhotco"' in line for line in results) == 2
    assert sum('"result": {"words": 3, "distinct": 2}' in line for line in results) == 2


def test_send_with_data_that_is_not_json_names_the_task(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "octohub_sync.hub", "--send", "resize", "{path: a.png}"],
                         cwd=tmp_path, env=plain_env(), capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "--send resize '{path: a.png}': not JSON" in run.stderr


def test_local_hub_close_stops_the_hub_as_stop_does() -> None:
    hub = LocalHub(KEY).start()
    api = hub.api_port
    hub.close()
    import socket
    with socket.socket() as probe:  # the API's port no longer answers: the hub ended, not only its connections
        assert probe.connect_ex(("127.0.0.1", api)) != 0
