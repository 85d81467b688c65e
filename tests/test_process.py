"""The node as its own process: signals, exit codes, and the soak under random drops."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import psutil
import pytest

from octohub_sync.hub import LocalHub

from .conftest import KEY, wait_until

ROOT = Path(__file__).resolve().parent.parent


def spawn(hub: LocalHub, tmp_path: Path, pc_id: Optional[str], *flags: str, log_name: str = "",
          host: str = "127.0.0.1", prefix: Sequence[str] = (), **env_extra: str) -> subprocess.Popen:
    """``python -m tests.node_process`` against ``hub``, its ledger in ``tmp_path/state``, its log in
    ``tmp_path/<log_name or pc_id>.log``; ``env_extra`` adds environment variables. ``pc_id`` None:
    the node finds its own (_config/identity.py). ``host``: the hub's address; ``prefix``: a command that
    runs the node (``ip netns exec NAME``)."""
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    env.update(OCTOHUB_SIGNATURE_KEY=KEY, OCTOHUB_LOG_LEVEL="INFO", OCTOHUB_STATUS_INTERVAL="0",
               OCTOHUB_STATE_DIR=str(tmp_path / "state"))
    env.update(env_extra)
    cmd = [*prefix, sys.executable, "-m", "tests.node_process", "--env-file", str(env_file),
           "--server-host", host, "--server-port", str(hub.api_port), *(["--pc-id", pc_id] if pc_id else []),
           "--reconnect-interval", "0.2", "--reconnect-max-interval", "1", "--stable-after", "1", *flags]
    # stderr goes to a file so that tests can watch the log while the node runs.
    with open(tmp_path / f"{log_name or pc_id}.log", "w") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def log_text(proc: subprocess.Popen) -> str:
    with open(proc.log.name) as log:  # type: ignore[attr-defined]
        return log.read()


def finish(proc: subprocess.Popen, timeout: float = 20) -> tuple[int, str]:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"node process did not exit within {timeout} s:\n{log_text(proc)[-3000:]}")
    return proc.returncode, log_text(proc)


def test_sigterm_drains_sends_result_and_exits_0(hub: LocalHub, tmp_path: Path) -> None:
    proc = spawn(hub, tmp_path, "node_sig")
    try:
        assert hub.wait_connected("node_sig", timeout=20)
        marker = tmp_path / "started"
        tid = hub.send_task("block", {"seconds": 0.5, "started_file": str(marker)}, pc_id="node_sig")
        assert wait_until(marker.exists, 10)
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc)
    finally:
        proc.kill()
    assert code == 0, err[-3000:]
    assert hub.wait_result(tid, timeout=5)["result"] == "unblocked"
    assert hub.wait_for(lambda: hub.connections[-1]["closed"] is not None, 5)
    assert hub.connections[-1].get("close_code") == 1000


def test_second_signal_exits_at_once(hub: LocalHub, tmp_path: Path) -> None:
    proc = spawn(hub, tmp_path, "node_cold", "--shutdown-timeout", "60")
    try:
        assert hub.wait_connected("node_cold", timeout=20)
        marker = tmp_path / "started"
        hub.send_task("block", {"seconds": 30, "started_file": str(marker)}, pc_id="node_cold")
        assert wait_until(marker.exists, 10)
        proc.send_signal(signal.SIGINT)
        # Two signals sent back to back reach Python as one; an operator's second one comes later.
        assert wait_until(lambda: "received SIGINT" in log_text(proc), 10)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        code, err = finish(proc, timeout=10)
    finally:
        proc.kill()
    assert code == 1 and "second signal" in err
    assert time.monotonic() - started < 10


def test_gives_up_exits_non_zero_with_one_line(hub: LocalHub, tmp_path: Path) -> None:
    hub.api_fault = "401"
    proc = spawn(hub, tmp_path, "node_giveup", "--max-reconnect-attempts", "2")
    code, err = finish(proc)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("octohub-node: gave up after 2 consecutive failed")


def test_bad_config_exits_2_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    env["OCTOHUB_MAX_WORKERS"] = "lots"
    proc = subprocess.run([sys.executable, "run_node.py", "--env-file", os.devnull], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "octohub-node: configuration error: OCTOHUB_MAX_WORKERS='lots': expected a number"


def test_python_dash_m_runs_the_same_program(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    env["OCTOHUB_PING_INTERVAL"] = "soon"
    proc = subprocess.run([sys.executable, "-m", "octohub_sync", "--env-file", os.devnull], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "octohub-node: configuration error: OCTOHUB_PING_INTERVAL='soon': expected a number"


def test_soak_every_task_answered_once_across_random_drops(tmp_path: Path) -> None:
    total, in_flight, drops = 10_000, 200, 6
    with LocalHub(KEY) as hub:
        proc = spawn(hub, tmp_path, "node_soak", "--max-workers", "8", "--log-level", "WARNING")
        try:
            assert hub.wait_connected("node_soak", timeout=20)
            rng = random.Random(7)
            drop_at = sorted(rng.sample(range(500, total - 500), drops))
            rss = []
            sent = 0
            for target in range(0, total + 1, 500):
                while sent < min(target, total):
                    if hub.wait_for(lambda: sent - len(hub.results) < in_flight, 30):
                        hub.send_task("count", pc_id="node_soak", task_id=f"soak_{sent}")
                        sent += 1
                    else:
                        pytest.fail(f"stalled at {len(hub.results)} results of {sent} sent")
                    if drop_at and len(hub.results) >= drop_at[0]:
                        drop_at.pop(0)
                        hub.drop("node_soak")
                if target % 2000 == 0:
                    rss.append(psutil.Process(proc.pid).memory_info().rss)
            assert hub.wait_for(lambda: len(hub.results) == total, 60), f"{len(hub.results)} of {total}"
            ids = {f"soak_{i}" for i in range(total)}
            assert set(hub.results) == ids
            failed = [r for rs in hub.results.values() for r in rs if r["status"] != "completed"]
            assert failed == []
            reruns = [t for t, rs in hub.results.items() if any(r["result"]["runs"] != 1 for r in rs)]
            assert reruns == []
            assert all(r == rs[0] for rs in hub.results.values() for r in rs)  # re-sends are the stored result
            assert sum(1 for c in hub.connections if c["pc_id"] == "node_soak") >= drops + 1
            growth = (rss[-1] - rss[1]) / 2**20
            print(f"soak: {total} tasks, {sum(map(len, hub.results.values()))} results, "
                  f"{len(hub.connections)} connections, RSS MB {[round(r / 2**20, 1) for r in rss]}")
            assert growth < 8, f"node RSS grew {growth:.1f} MB between 2,000 and {total} tasks"
        finally:
            proc.send_signal(signal.SIGTERM)
            code, err = finish(proc)
        assert code == 0, err[-3000:]


@pytest.mark.parametrize("example", ["simple_client.py", "custom_client.py"])
def test_examples_run_against_the_local_hub(example: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    proc = subprocess.run([sys.executable, f"examples/{example}", "--local"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "completed" in proc.stdout


def test_demo_prints_results_and_exits_0() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    proc = subprocess.run([sys.executable, "run_node.py", "--demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "every task answered as expected" in proc.stdout
    assert proc.stdout.count("completed") == 4 and proc.stdout.count("failed") == 2


def test_standalone_local_hub_serves_a_node(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCTOHUB_")}
    hub_out = tmp_path / "hub.out"
    with open(hub_out, "w") as out:
        hub = subprocess.Popen([sys.executable, "-m", "octohub_sync.hub", "--api-port", "0", "--ws-port", "0",
                                "--echo-every", "0.2", "--key", KEY], cwd=ROOT, env=env, stdout=out,
                               stderr=subprocess.DEVNULL)
    node = None
    try:
        assert wait_until(lambda: "--server-port" in hub_out.read_text(), 20)
        words = hub_out.read_text().split()
        port = words[words.index("--server-port") + 1]
        assert KEY not in hub_out.read_text()  # a key given on the command line is not echoed
        assert "OCTOHUB_SIGNATURE_KEY=<your key> python run_node.py" in hub_out.read_text()
        node = subprocess.Popen([sys.executable, "run_node.py", "--env-file", os.devnull, "--server-host", "127.0.0.1",
                                 "--server-port", port, "--signature-key", KEY], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(lambda: '"status": "completed"' in hub_out.read_text(), 20)
    finally:
        for proc in (node, hub):
            if proc is not None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    assert hub.returncode == 0 and node.returncode == 0
