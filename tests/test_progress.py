"""Progress (docs/protocol.md §3.3 task_progress), current_task() outside a node, and the live view
(running_tasks(), /tasks, the longest-running task's age)."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest
import requests

from octohub_sync import TaskControl, current_task
from octohub_sync.hub import LocalHub

from .conftest import connected, run_doc_example, wait_until

pytestmark = pytest.mark.timeout(30)






# -- a handler called directly, outside a node ---------------------------------------------------

def resize(task: dict) -> dict:
    """A handler written for a node, called here as a plain function."""
    control = current_task()
    control.check_cancelled()
    control.progress(0.5, "half way")
    waited = control.cancelled.wait(0)
    return {"path": task["data"]["path"], "task_id": control.task_id, "cancelled": control.is_cancelled() or waited}


def test_a_handler_called_directly_runs_as_an_ordinary_call() -> None:
    assert resize({"data": {"path": "a.png"}}) == {"path": "a.png", "task_id": None, "cancelled": False}
    results: list[dict] = []
    thread = threading.Thread(target=lambda: results.append(resize({"data": {"path": "b.png"}})))
    thread.start()
    thread.join(5)
    assert results == [{"path": "b.png", "task_id": None, "cancelled": False}]
    assert current_task() is not current_task()  # a fresh inert control each time: nothing is shared


def test_progress_checks_its_arguments_everywhere() -> None:
    control = current_task()
    for bad in ("half", True, [0.5]):
        with pytest.raises(TypeError):
            control.progress(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        control.progress(float("nan"))
    control.progress(7)
    assert control.last_progress is not None and control.last_progress[0] == 1.0  # clamped
    control.progress(-1, "x" * 1000)
    assert control.last_progress[:2] == (0.0, "x" * 200)
    control.progress(10 ** 400)
    assert control.last_progress[0] == 1.0


def test_progress_rate_limit_and_a_time_limit_without_a_socket() -> None:
    control = TaskControl("t1", "crawl")
    control.attach(lambda: True)
    control.progress(0.1)
    assert control.take_progress(100.0, 1.0) is not None
    control.progress(0.2)
    assert control.take_progress(100.5, 1.0) is None  # within the interval
    frame = control.take_progress(101.0, 1.0)
    assert frame is not None and json.loads(frame)["progress"] == 0.2
    control.progress(0.3, "last")
    control.request_cancel("timed out after 1 s", answered=True)  # the hub has its answer: nothing more
    assert control.take_progress(200.0, 1.0) is None and control.close() is None
    finished = TaskControl("t3", "x")
    finished.close()
    assert finished.request_cancel("too late") is False and not finished.is_cancelled()  # the handler returned
    offline = TaskControl("t2", "crawl")
    offline.attach(lambda: False)
    offline.progress(0.5)
    assert offline.take_progress(100.0, 0.0) is None and offline.close() is None  # dropped, not queued


# -- against the hub ------------------------------------------------------------------------------

def test_progress_reaches_the_hub_in_both_dialects(make_node, any_hub: LocalHub) -> None:
    seen = threading.Event()

    def convert(task: dict) -> str:
        current_task().progress(0.5, "half way")
        seen.wait(10)
        return "converted"

    connected(make_node, any_hub, {"convert": convert}, progress_interval=0)
    tid = any_hub.send_task("convert")
    frame = any_hub.wait_progress(tid)
    seen.set()
    assert any_hub.wait_result(tid)["result"] == "converted"
    assert {k: frame[k] for k in ("type", "task_id", "progress", "message")} == {
        "type": "task_progress", "task_id": tid, "progress": 0.5, "message": "half way"}
    assert isinstance(frame["timestamp"], int)
    assert len(any_hub.progress[tid]) == 1  # the same value is not sent twice


def test_progress_is_rate_limited_and_the_last_value_comes_before_the_result(make_node, hub: LocalHub) -> None:
    interval = 0.4
    measured: dict[str, float] = {}

    def crawl(task: dict) -> int:
        control = current_task()
        began = time.monotonic()
        slowest, calls = 0.0, 0
        while time.monotonic() - began < 1.2:
            before = time.monotonic()
            control.progress(min(calls / 10000, 0.99), f"page {calls}")
            slowest = max(slowest, time.monotonic() - before)
            calls += 1
            time.sleep(0.0005)
        control.progress(1.0, "done")
        measured.update(duration=time.monotonic() - began, slowest=slowest)
        return calls + 1

    connected(make_node, hub, {"crawl": crawl}, progress_interval=interval)
    tid = hub.send_task("crawl")
    calls = hub.wait_result(tid)["result"]
    frames = hub.progress[tid]
    assert 2 <= len(frames) <= measured["duration"] / interval + 2, (len(frames), measured)
    assert calls > 100 * len(frames)
    assert (frames[-1]["progress"], frames[-1]["message"]) == (1.0, "done")
    fractions = [f["progress"] for f in frames]
    assert fractions == sorted(fractions)
    kinds = [m["type"] for m in hub.received if m.get("task_id") == tid]
    assert kinds == ["task_progress"] * len(frames) + ["task_result"]
    assert measured["slowest"] < 0.1  # progress() never waits for the network


def test_progress_while_disconnected_is_dropped_not_queued(make_node, hub: LocalHub) -> None:
    offline, reported, back, finish = (threading.Event() for _ in range(4))

    def job(task: dict) -> str:
        control = current_task()
        control.progress(0.1, "online")
        offline.wait(10)
        control.progress(0.5, "offline")
        reported.set()
        back.wait(10)
        control.progress(0.9, "back")
        finish.wait(10)
        return "finished"

    client = connected(make_node, hub, {"job": job}, progress_interval=0)
    tid = hub.send_task("job")
    hub.wait_progress(tid, lambda f: f["message"] == "online")
    hub.stop_ws()
    assert wait_until(lambda: not client.is_connected(), 10)
    offline.set()
    assert reported.wait(10)
    assert client.running_tasks()[0]["progress"]["message"] == "offline"  # the live view has it
    hub.start_ws()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    back.set()
    hub.wait_progress(tid, lambda f: f["message"] == "back")
    finish.set()
    assert hub.wait_result(tid)["result"] == "finished"
    assert [f["message"] for f in hub.progress[tid]] == ["online", "back"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_live_view_stats_status_line_and_tasks_page(make_node, hub: LocalHub,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    def batch(task: dict) -> str:
        current_task().progress(0.25, "batch 1 of 4")
        release.wait(10)
        return "done"

    port = free_port()
    client = connected(make_node, hub, {"batch": batch, "idle": lambda task: release.wait(10) and "idle done"},
                       metrics_port=port)
    first = hub.send_task("batch")
    assert wait_until(lambda: len(client.running_tasks()) == 1, 10)
    second = hub.send_task("idle")
    assert wait_until(lambda: len(client.running_tasks()) == 2, 10)
    hub.cancel(second, "not needed")
    assert wait_until(lambda: client.running_tasks()[1]["cancel_requested"], 10)
    assert wait_until(lambda: client.running_tasks()[0]["progress"] is not None, 10)
    view = client.running_tasks()
    assert [(t["task_id"], t["task_type"]) for t in view] == [(first, "batch"), (second, "idle")]  # oldest first
    assert view[0]["progress"]["fraction"] == 0.25 and view[0]["progress"]["message"] == "batch 1 of 4"
    assert view[0]["cancel_requested"] is False and view[1]["cancel_reason"] == "cancelled by the hub: not needed"
    assert view[0]["elapsed"] >= view[1]["elapsed"] >= 0 and view[0]["started"] <= time.time()
    assert client.stats()["oldest_task_age"] >= view[0]["elapsed"]
    with requests.Session() as http:
        http.trust_env = False
        page = http.get(f"http://127.0.0.1:{port}/tasks", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"] == "application/json"
    body = page.json()
    assert body["pc_id"] == client.pc_id and [t["task_id"] for t in body["tasks"]] == [first, second]
    caplog.set_level(logging.INFO, logger="octohub_sync")
    client.log_status()
    assert "running 2 (longest " in caplog.text and "cancelled 1" in caplog.text
    release.set()
    assert hub.wait_result(first)["result"] == "done" and hub.wait_result(second)["result"] == "idle done"
    assert wait_until(lambda: client.running_tasks() == [] and client.stats()["oldest_task_age"] == 0, 10)


def test_the_long_tasks_guide_example_runs_against_the_local_hub() -> None:
    lines = run_doc_example("docs/long-tasks.md")
    assert lines[:3] == ["{'pages': 2}", "{'pages': 50}", "page 50 of 50"]
    assert lines[4] == "TaskCancelled: cancelled by the hub: no longer needed"
