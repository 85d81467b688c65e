"""The node recycles itself (OCTOHUB_MAX_TASKS, _MAX_MEMORY, _MAX_UPTIME): it stops taking tasks, drains,
sends every result and stops; the program exits with ExitCode.RECYCLE for its service manager."""
from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import pytest

from octohub_sync import NodeWebSocketClient
from octohub_sync.cli._exit_codes import ExitCode
from octohub_sync._ops.status_server import render_metrics
from octohub_sync.hub import LocalHub
from octohub_sync._node.recycle import Recycler
from octohub_sync._platform.memory import rss_bytes

from .conftest import wait_until
from .test_process import finish, spawn


def test_max_tasks_program_answers_every_task_then_exits_with_the_recycle_code(hub: LocalHub, tmp_path: Path) -> None:
    proc = spawn(hub, tmp_path, "node_recycle", "--max-tasks", "3")
    try:
        assert hub.wait_connected("node_recycle", timeout=20)
        # Tasks that last (0.3 s): the two refusals come during the drain, not in the last milliseconds of the
        # stop, when an answer is kept in the ledger for the next start instead (and would not arrive here).
        ids = [hub.send_task("block", {"seconds": 0.3}, pc_id="node_recycle") for _ in range(5)]
        code, log = finish(proc)
    finally:
        proc.kill()
    assert code == ExitCode.RECYCLE == 3, log[-3000:]
    answers = [hub.wait_result(tid, timeout=5) for tid in ids]
    assert [a["status"] for a in answers] == ["completed"] * 3 + ["failed"] * 2
    assert all(a["error"].startswith("NodeShuttingDown") for a in answers[3:])
    assert "recycling: max_tasks: 3 tasks accepted (OCTOHUB_MAX_TASKS=3)" in log
    assert "exiting with code 3 (recycle)" in log


def test_max_uptime_drains_the_running_task_and_stops_by_itself(make_node, hub: LocalHub) -> None:
    running, release = threading.Event(), threading.Event()

    def hold(task: dict) -> str:
        running.set()
        assert release.wait(10)
        return "done"

    # The drain's bound is far beyond the test's own steps, which a loaded machine can make slow.
    node: NodeWebSocketClient = make_node(_start=False, max_uptime=0.5, shutdown_timeout=60)
    node.register_task_handler("hold", hold)
    node.start()
    assert node.wait_connected(10) and hub.wait_connected(node.pc_id, 10)
    held = hub.send_task("hold", {})
    assert running.wait(10)
    assert wait_until(lambda: node.recycle is not None, 10)
    assert node.recycle.startswith("max_uptime: up ") and "(OCTOHUB_MAX_UPTIME=0.5)" in node.recycle
    refused = hub.wait_result(hub.send_task("hold", {}))
    assert refused["error"].startswith("NodeShuttingDown")
    stats = node.stats()
    assert stats["recycle"] == node.recycle and stats["state"] == "stopping"
    assert 'octohub_node_recycling{pc_id="%s",limit="max_uptime"} 1' % node.pc_id in render_metrics(stats)
    release.set()
    assert hub.wait_result(held)["result"] == "done"
    done = threading.Event()
    threading.Thread(target=lambda: (node.wait_stopped(), done.set()), name="test-wait").start()
    assert done.wait(10)  # stopped by itself: nobody called stop()
    assert node.stop() is True  # the stop it made was clean


def test_max_memory_recycles_a_node_over_its_ceiling(make_node, hub: LocalHub) -> None:
    node: NodeWebSocketClient = make_node(max_memory=1)  # 1 MB: any Python process is over it
    assert wait_until(lambda: node.recycle is not None, 10)
    assert node.recycle.startswith("max_memory: ") and "(OCTOHUB_MAX_MEMORY=1)" in node.recycle
    done = threading.Event()
    threading.Thread(target=lambda: (node.wait_stopped(), done.set()), name="test-wait").start()
    assert done.wait(10)


def test_a_node_under_its_limits_keeps_serving(make_node, hub: LocalHub) -> None:
    node: NodeWebSocketClient = make_node(_start=False, max_memory=100_000, max_tasks=1000, max_uptime=3600)
    node.register_task_handler("work", lambda task: "ok")
    node.start()
    assert node.wait_connected(10)
    assert [hub.wait_result(hub.send_task("work", {}))["result"] for _ in range(3)] == ["ok"] * 3
    assert node.recycle is None and node.stats()["recycle"] is None


def test_memory_that_cannot_be_read_never_recycles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated on Linux: "win32" without its bindings (_platform/windows.py) reads nothing: None, no recycle."""
    monkeypatch.setattr(sys, "platform", "win32")
    assert rss_bytes() is None
    reasons: list[str] = []
    log = logging.LoggerAdapter(logging.getLogger("octohub_sync.test"), {})
    recycler = Recycler(max_tasks=0, max_memory=1, max_uptime=0, close=lambda: None, on_recycle=reasons.append,
                        log=log, rss=rss_bytes)
    recycler.started(0.0)
    for now in (1.0, 2.0, 3.0):
        recycler.tick(now)
    assert reasons == [] and recycler.reason is None
