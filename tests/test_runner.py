"""The task runner: duplicates, backpressure, time limits, drain on stop.

Through a real hub first, then :class:`TaskRunner` on its own (no socket: results go to a list).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Iterator

import pytest

from octohub_sync._execution.options import TaskOptions

from octohub_sync._node.dispatch import dispatch
from octohub_sync._delivery.ledger import MemoryStore
from octohub_sync.hub import LocalHub
from octohub_sync._wire.protocol import Task
from octohub_sync._execution.runner import TaskRunner
from octohub_sync._ops.stats import Stats

from .conftest import Gate, connected_node, node_threads, wait_until


def test_redelivered_task_runs_once(make_node, hub: LocalHub) -> None:
    client = make_node(_start=False)
    calls, release = [], threading.Event()
    client.register_task_handler("count", lambda task: (calls.append(1), release.wait(10), len(calls))[2])
    client.start()
    assert client.wait_connected(10)
    hub.send_task("count", task_id="t-1")
    hub.send_task("count", task_id="t-1")  # while running: ignored
    assert wait_until(lambda: client.stats()["tasks_duplicate"] == 1, 10)
    release.set()
    assert hub.wait_result("t-1")["result"] == 1
    hub.send_task("count", task_id="t-1")  # after it finished: stored result again
    assert hub.wait_for(lambda: len(hub.results["t-1"]) == 2, 10)
    assert hub.results["t-1"][0] == hub.results["t-1"][1]
    assert len(calls) == 1


def test_backpressure_refuses_beyond_workers_plus_pending(make_node, hub: LocalHub) -> None:
    gate = Gate()
    client = connected_node(make_node, {"block": gate.handler(True)}, max_workers=2, max_pending=1)
    ids = [hub.send_task("block") for _ in range(5)]
    assert hub.wait_for(lambda: all(t in hub.results for t in ids[3:]), 10)
    for t in ids[3:]:
        assert hub.results[t][0]["status"] == "failed" and "node busy" in hub.results[t][0]["error"]
    assert not any(t in hub.results for t in ids[:3])
    gate.release.set()
    assert all(hub.wait_result(t)["status"] == "completed" for t in ids[:3])
    assert client.stats()["tasks_rejected"] == 2


def test_task_timeout_from_message_and_default(make_node, hub: LocalHub) -> None:
    gate = Gate()
    client = connected_node(make_node, {"block": gate.handler("late")}, task_timeout=0.3)
    own = hub.send_task("block", timeout=0.2)
    default = hub.send_task("block")
    assert hub.wait_result(own)["error"] == "TaskTimeout: timed out after 0.2 s"
    assert hub.wait_result(default)["error"] == "TaskTimeout: timed out after 0.3 s"
    gate.release.set()
    assert wait_until(lambda: client.stats()["tasks_running"] == 0, 10)
    assert len(hub.results[own]) == 1 and len(hub.results[default]) == 1  # late results discarded
    assert client.stats()["tasks_timed_out"] == 2


def test_graceful_stop_drains_and_refuses(make_node, hub: LocalHub) -> None:
    gate = Gate()
    client = connected_node(make_node, {"slow": gate.handler("finished")})
    running = hub.send_task("slow")
    assert gate.started.wait(10)
    stopper = threading.Thread(target=client.stop, kwargs={"timeout": 10})
    stopper.start()
    assert wait_until(lambda: client.stats()["state"] == "stopping", 5)
    late = hub.send_task("echo")
    assert hub.wait_result(late)["error"] == "NodeShuttingDown: node shutting down"
    gate.release.set()
    stopper.join(10)
    assert hub.wait_result(running)["result"] == "finished"
    assert hub.wait_for(lambda: hub.connections[-1]["closed"] is not None, 5)
    assert hub.connections[-1].get("close_code") == 1000
    assert not node_threads()


def test_eight_tasks_run_at_once(make_node, hub: LocalHub) -> None:
    import threading

    client = make_node(_start=False, max_workers=8)
    gate = threading.Barrier(8, timeout=10)
    client.register_task_handler("meet", lambda task: gate.wait() >= 0)
    client.start()
    assert client.wait_connected(10)
    ids = [hub.send_task("meet") for _ in range(8)]
    # The barrier only opens when all 8 handlers are inside it at the same time.
    assert all(hub.wait_result(t, 15)["status"] == "completed" for t in ids)


def test_stop_past_its_timeout_answers_queued_tasks_and_names_the_running_one(make_node, hub: LocalHub,
                                                                             caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    gate = Gate()
    client = connected_node(make_node, {"block": gate.handler("late")}, max_workers=1)
    running = hub.send_task("block")
    assert gate.started.wait(10)
    queued = hub.send_task("block")
    assert wait_until(lambda: client.stats()["tasks_queued"] == 1, 5)
    try:
        assert client.stop(timeout=0.2) is False  # a task was still running
        assert hub.wait_result(queued)["error"] == "NodeShuttingDown: node stopped before the task started"
        # drain() counts the queued task too: it was unfinished when the limit passed.
        assert any(f"stopping with 2 task(s) still running: {running}, {queued}" in r.getMessage()
                   for r in caplog.records)
        assert running not in hub.results
        assert client.stats()["tasks_rejected"] == 1
    finally:
        gate.release.set()  # its thread ends; the make_node fixture checks that no thread is left


# -- TaskRunner without a socket ---------------------------------------------------------------


class Delivered:
    """The runner's ``deliver``: keeps (task_id, result), and the ids of results that end their task; wakes waiters."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict]] = []
        self.finished: list[str] = []
        self.cond = threading.Condition()

    def __call__(self, task_id: str, frame: str, *, finished: bool = False, hand_off: bool = False) -> None:
        with self.cond:
            self.items.append((task_id, json.loads(frame)))
            if finished:
                self.finished.append(task_id)
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 5) -> list[tuple[str, dict]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= count, timeout), self.items
            return list(self.items)


def task(task_id: str, task_type: str = "block", **fields: object) -> Task:
    plan = dispatch(json.dumps({"type": "task", "task_id": task_id, "task_type": task_type, **fields}), max_bytes=1 << 20)
    assert plan.task is not None
    return plan.task


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release.set()


def make_runner(delivered: Delivered, gate: Gate, stats: Stats, **opts: int) -> TaskRunner:
    values = dict(max_workers=1, max_pending=4, task_timeout=0, cache_size=10)
    values.update(opts)
    runner = TaskRunner(deliver=delivered, stats=stats, store=MemoryStore(),
                        log=logging.LoggerAdapter(logging.getLogger("test"), {}), **values)
    runner.register("block", gate.handler(lambda t: t["task_id"]), TaskOptions())
    runner.start()
    runner.start()  # idempotent: still one pool
    return runner


def test_shutdown_answers_tasks_that_never_started(gate: Gate) -> None:
    delivered, stats = Delivered(), Stats()
    runner = make_runner(delivered, gate, stats)
    runner.submit(task("a"))
    assert gate.started.wait(5)
    runner.submit(task("b"))
    runner.submit(task("c"))
    assert runner.tasks.counts() == (1, 2)
    runner.stop_accepting()
    assert runner.drain(0.05) == ["a", "b", "c"]  # the limit passed with all three unfinished
    runner.shutdown()
    stopped = "NodeShuttingDown: node stopped before the task started"
    assert [(t, m["error"]) for t, m in delivered.wait(2)] == [("b", stopped), ("c", stopped)]
    assert runner.tasks.counts() == (1, 0)
    gate.release.set()
    tid, result = delivered.wait(3)[2]
    assert (tid, result["status"], result["result"]) == ("a", "completed", "a")
    assert delivered.finished == ["a"]  # the refusals end nothing: b and c may come again
    assert runner.drain(5) == []
    assert stats.snapshot()["tasks_rejected"] == 2 and stats.snapshot()["tasks_completed"] == 1
    runner.submit(task("d"))  # after shutdown: refused at once
    assert delivered.wait(4)[3][1]["error"] == "NodeShuttingDown: node shutting down"


def test_result_cache_keeps_the_newest_results(gate: Gate) -> None:
    delivered, stats = Delivered(), Stats()
    runner = make_runner(delivered, gate, stats, cache_size=2)
    gate.release.set()
    for n, tid in enumerate(("a", "b", "c"), start=1):
        runner.submit(task(tid))
        delivered.wait(n)
    runner.submit(task("c"))  # still cached: answered from the cache
    assert delivered.wait(4)[3] == delivered.items[2]
    runner.submit(task("a"))  # evicted (cache of 2): runs again
    delivered.wait(5)
    assert (stats.snapshot()["tasks_duplicate"], stats.snapshot()["tasks_completed"]) == (1, 4)
    runner.shutdown()


def test_a_time_limit_ends_the_drain_that_waits_for_it(gate: Gate) -> None:
    delivered, stats = Delivered(), Stats()
    runner = make_runner(delivered, gate, stats)
    runner.submit(task("a", timeout=0.2))
    assert gate.started.wait(5)
    runner.stop_accepting()
    left: list[list[str]] = []
    drainer = threading.Thread(target=lambda: left.append(runner.drain(10)), name="test-drain")
    drainer.start()
    try:
        assert wait_until(lambda: runner.tasks._draining == 1, 5)  # it waits
        runner.expire(time.monotonic() + 1)  # what the timers thread does at the limit
        drainer.join(2)  # woken by the answer, not by its own 10 s
        assert not drainer.is_alive() and left == [[]]
        assert runner.tasks.overdue() == ["a"]  # answered TaskTimeout, its handler runs on
        assert delivered.wait(1)[0][1]["error"] == "TaskTimeout: timed out after 0.2 s"
    finally:
        gate.release.set()
        drainer.join(10)
    assert wait_until(lambda: runner.tasks.overdue() == [], 5)
    runner.shutdown()
