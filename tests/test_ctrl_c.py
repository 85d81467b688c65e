"""Ctrl+C (a real SIGINT to a real process) ends the example script and run_node.py cleanly:
exit 0 or 130, the node stopped, no traceback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from octohub_sync.hub import LocalHub

from .conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(sys.platform == "win32", reason="a SIGINT to a process is POSIX; Windows has Ctrl+C events")]


@pytest.mark.parametrize("script", ["examples/simple_client.py", "run_node.py"])
def test_ctrl_c_stops_without_a_traceback(hub: LocalHub, tmp_path: Path, script: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_") and "proxy" not in k.lower()}
    env.update(OCTOHUB_SERVER_HOST="127.0.0.1", OCTOHUB_SERVER_PORT=str(hub.api_port), OCTOHUB_SIGNATURE_KEY=hub.key,
               OCTOHUB_PC_ID="node_ctrl_c", OCTOHUB_STATE_DIR="off", OCTOHUB_RECONNECT_INTERVAL="0.2")
    log = tmp_path / "log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / script)], cwd=str(tmp_path), env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: "sent node_ready" in log.read_text(), 20), log.read_text()
        proc.send_signal(signal.SIGINT)  # Ctrl+C
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code in (0, 130), text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert "node stopped" in text
    if script == "run_node.py":  # the program's signal handling logs with the node's pc_id, as every node line
        assert "[node_ctrl_c] received SIGINT: stopping" in text
