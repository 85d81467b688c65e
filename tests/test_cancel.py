"""Cancellation (docs/protocol.md §3.2 task_cancel, §6): against the real local hub, in both dialects,
and the task board's guarded call without a socket."""
from __future__ import annotations

import functools
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import pytest

from octohub_sync import NodeWebSocketClient, ProtocolError, TaskCancelled, current_task
from octohub_sync._wire import protocol
from octohub_sync._node.dispatch import dispatch
from octohub_sync.hub import LocalHub
from octohub_sync._execution.task_run import TaskRegistry, TaskRun
from octohub_sync._wire.protocol import Task
from octohub_sync._execution.handler_calls import TaskBoard, _HardStop
from octohub_sync._execution.task_control import TaskControl

from .conftest import connected, wait_until

pytestmark = pytest.mark.timeout(30)

LOG = logging.LoggerAdapter(logging.getLogger("tests.cancel"), {})

def untraced(test: Callable[..., None]) -> Callable[..., None]:
    """Run ``test`` in a child pytest without coverage when this process runs under a line tracer.

    Coverage's tracer and a hard stop (an exception raised into a spinning handler's thread) do not
    mix: under the tracer the exception never lands and the thread spins, holding the GIL (the node
    itself refuses hard stops while a tracer runs, see _execution/handler_calls.py). These tests are about the
    hard stop itself, so they run where nothing traces.
    """
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        if sys.gettrace() is None:
            return test(*args, **kwargs)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
        child = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "--no-cov",
             f"{Path(__file__).name}::{test.__name__}"],
            cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=120)
        assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-2000:]
        return None
    return run







def barrier(hub: LocalHub, client: NodeWebSocketClient) -> None:
    """Return once the node has handled every frame the hub sent before: its pong comes after them."""
    pongs = hub.count("pong")
    hub.send_json_ping(client.pc_id)
    assert hub.wait_for(lambda: hub.count("pong") > pongs, 10)


# -- the wire format, without a socket -----------------------------------------------------------

@pytest.mark.parametrize("message, expected", [
    ({"type": "task_cancel", "task_id": "t1"}, ("t1", None)),
    ({"type": "task_cancel", "task_id": "t1", "reason": "no longer needed"}, ("t1", "no longer needed")),
    ({"action": "task_cancel", "data": {"task_id": "t2", "reason": "user"}}, ("t2", "user")),
    ({"action": "task_cancel", "task_id": "t3"}, ("t3", None)),
    ({"type": "task_cancel", "task_id": "t4", "reason": 42}, ("t4", None)),
    ({"type": "task_cancel", "task_id": "t5", "reason": "x" * 500}, ("t5", "x" * protocol.MAX_TEXT)),
])
def test_dispatch_reads_task_cancel_in_both_dialects(message: dict, expected: tuple) -> None:
    plan = dispatch(json.dumps(message), max_bytes=1 << 20)
    assert plan.cancel == expected
    assert plan.task is None and plan.reply is None and plan.handler is None


@pytest.mark.parametrize("message", [
    {"type": "task_cancel"}, {"type": "task_cancel", "task_id": ""}, {"type": "task_cancel", "task_id": 7},
    {"action": "task_cancel", "data": {"reason": "r"}}, {"type": "task_cancel", "task_id": "x" * 257},
])
def test_task_cancel_without_a_usable_task_id_is_a_bad_frame(message: dict) -> None:
    with pytest.raises(ProtocolError):
        dispatch(json.dumps(message), max_bytes=1 << 20)


def test_node_ready_lists_the_features() -> None:
    ready = json.loads(protocol.node_ready("node_1", task_types=["echo"], capacity=2))
    assert ready["features"] == ["cancel", "progress", "process_isolation", "limits", "rate_limits", "recycle"]


# -- against the hub ------------------------------------------------------------------------------

def test_cancel_a_queued_task_answers_at_once_and_never_runs_it(make_node, any_hub: LocalHub) -> None:
    release, started = threading.Event(), []
    client = connected(make_node, any_hub, {"block": lambda task: (started.append(task["task_id"]), release.wait(10))[1]},
                       max_workers=1)
    running = any_hub.send_task("block")
    assert wait_until(lambda: started == [running], 10)
    queued = any_hub.send_task("block")
    assert wait_until(lambda: client.stats()["tasks_queued"] == 1, 10)
    any_hub.cancel(queued, "no longer needed")
    result = any_hub.wait_result(queued)  # while the first task still holds the only worker
    assert result["status"] == "failed"
    assert result["error"] == "TaskCancelled: cancelled by the hub: no longer needed (before it started)"
    assert running not in any_hub.results
    release.set()
    assert any_hub.wait_result(running)["status"] == "completed"
    assert wait_until(lambda: client.stats()["tasks_running"] == 0, 10)
    assert started == [running]  # the cancelled task never started
    assert client.stats()["tasks_cancelled"] == 1 and client.stats()["tasks_queued"] == 0


def test_cancel_a_cooperative_running_task(make_node, any_hub: LocalHub) -> None:
    def cooperative(task: dict) -> str:
        control = current_task()
        assert control.task_id == task["task_id"]
        for _ in range(1000):
            if control.cancelled.wait(0.01):
                control.check_cancelled()
        return "never cancelled"

    client = connected(make_node, any_hub, {"convert": cooperative})
    tid = any_hub.send_task("convert")
    assert wait_until(lambda: [t["task_id"] for t in client.running_tasks()] == [tid], 10)
    any_hub.cancel(tid, "user pressed stop")
    result = any_hub.wait_result(tid)
    assert result["status"] == "failed"
    assert result["error"] == "TaskCancelled: cancelled by the hub: user pressed stop"
    assert wait_until(lambda: client.running_tasks() == [], 10)
    assert client.stats()["tasks_cancelled"] == 1 and client.stats()["tasks_failed"] == 1


def test_a_task_that_ignores_the_flag_is_answered_as_it_really_ended(make_node, hub: LocalHub) -> None:
    release = threading.Event()
    client = connected(make_node, hub, {"stubborn": lambda task: release.wait(10) and "finished anyway"})
    tid = hub.send_task("stubborn")
    assert wait_until(lambda: len(client.running_tasks()) == 1, 10)
    hub.cancel(tid)
    barrier(hub, client)
    view = client.running_tasks()
    assert view[0]["task_id"] == tid and view[0]["cancel_requested"] is True
    assert view[0]["cancel_reason"] == "cancelled by the hub"
    assert tid not in hub.results  # the node never answers while the thread still runs the task
    release.set()
    result = hub.wait_result(tid)
    assert (result["status"], result["result"]) == ("completed", "finished anyway")
    assert len(hub.results[tid]) == 1


def test_unknown_finished_and_repeated_cancels_are_ignored(make_node, hub: LocalHub,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    client = connected(make_node, hub, {"wait": lambda task: release.wait(10) and "done"})
    caplog.set_level(logging.DEBUG, logger="octohub_sync")
    hub.cancel("no_such_task", pc_id=client.pc_id)
    done = hub.send_task("echo", {})
    assert hub.wait_result(done)["status"] == "completed"
    hub.cancel(done)
    tid = hub.send_task("wait")
    assert wait_until(lambda: len(client.running_tasks()) == 1, 10)
    hub.cancel(tid, "first")
    hub.cancel(tid, "second")
    barrier(hub, client)
    assert client.running_tasks()[0]["cancel_reason"] == "cancelled by the hub: first"
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 3 and all(r.levelno == logging.DEBUG for r in caplog.records if "ignored" in r.getMessage())
    assert any("no_such_task" in line for line in ignored) and any(done in line for line in ignored)
    release.set()
    assert hub.wait_result(tid)["result"] == "done"
    assert len(hub.results[done]) == 1 and client.stats()["tasks_cancelled"] == 1


@untraced
def test_hard_stop_after_the_grace_period_ends_a_pure_python_loop(make_node, any_hub: LocalHub) -> None:
    seen: list[str] = []

    def spin(task: dict) -> None:
        seen.append(current_task().task_id)  # type: ignore[arg-type]
        n = 0
        while True:  # never looks at the flag
            n += 1

    client = connected(make_node, any_hub, {"spin": spin, "whoami": lambda task: current_task().task_id},
                       max_workers=1, cancel_grace=0.3)
    tid = any_hub.send_task("spin")
    assert wait_until(lambda: seen == [tid], 10)
    cancelled_at = time.monotonic()
    any_hub.cancel(tid, "too slow")
    result = any_hub.wait_result(tid)
    assert time.monotonic() - cancelled_at >= 0.3
    assert result["status"] == "failed"
    assert result["error"] == "TaskCancelled: cancelled by the hub: too slow; stopped after 0.3 s (OCTOHUB_CANCEL_GRACE)"
    # The same (only) worker thread runs the next task, which sees its own id: nothing leaked.
    nxt = any_hub.send_task("whoami")
    assert any_hub.wait_result(nxt)["result"] == nxt
    assert client.running_tasks() == []


@untraced
def test_hard_stop_cannot_interrupt_a_blocking_c_call(make_node, hub: LocalHub) -> None:
    """time.sleep() is one call into C: the exception comes when it returns (documented limit)."""
    started = threading.Event()

    def nap(task: dict) -> str:
        started.set()
        time.sleep(1.0)
        return "woke up"

    connected(make_node, hub, {"nap": nap}, cancel_grace=0.1)
    tid = hub.send_task("nap")
    assert started.wait(10)
    began = time.monotonic()
    hub.cancel(tid)
    result = hub.wait_result(tid)
    assert result["error"].startswith("TaskCancelled: cancelled by the hub; stopped after 0.1 s")
    assert time.monotonic() - began >= 0.5  # not before the sleep ended


def test_time_limit_sets_the_cancel_flag(make_node, hub: LocalHub) -> None:
    reasons: list[str] = []

    def cooperative(task: dict) -> str:
        control = current_task()
        control.cancelled.wait(10)
        reasons.append(control.cancel_reason or "")
        control.check_cancelled()
        return "ran on"

    client = connected(make_node, hub, {"long": cooperative}, max_workers=1)
    tid = hub.send_task("long", timeout=0.3)
    assert hub.wait_result(tid)["error"] == "TaskTimeout: timed out after 0.3 s"  # at once, as before
    assert wait_until(lambda: reasons == ["timed out after 0.3 s"], 10)
    assert wait_until(lambda: client.stats()["tasks_running"] == 0, 10)  # the worker is free again
    assert hub.wait_result(hub.send_task("echo", {}))["status"] == "completed"
    assert len(hub.results[tid]) == 1  # the late TaskCancelled is discarded like any late result


@untraced
def test_time_limit_and_grace_free_the_worker_from_a_loop(make_node, hub: LocalHub) -> None:
    def spin(task: dict) -> None:
        while True:
            pass

    client = connected(make_node, hub, {"spin": spin}, max_workers=1, cancel_grace=0.2)
    tid = hub.send_task("spin", timeout=0.2)
    assert hub.wait_result(tid)["error"] == "TaskTimeout: timed out after 0.2 s"
    assert hub.wait_result(hub.send_task("echo", {}))["status"] == "completed"  # needs the only worker
    assert wait_until(lambda: client.stats()["tasks_running"] == 0, 10) and len(hub.results[tid]) == 1


def test_a_handler_may_raise_task_cancelled_itself(make_node, hub: LocalHub) -> None:
    def gives_up(task: dict) -> None:
        raise TaskCancelled("input vanished")

    connected(make_node, hub, {"gives_up": gives_up})
    assert hub.wait_result(hub.send_task("gives_up"))["error"] == "TaskCancelled: input vanished"


def test_task_cancelled_passes_through_except_exception() -> None:
    assert not issubclass(TaskCancelled, Exception) and issubclass(TaskCancelled, BaseException)
    control = TaskControl("t1", "x")
    control.request_cancel("stop")
    with pytest.raises(TaskCancelled, match="stop"):
        try:
            control.check_cancelled()
        except Exception:  # a batch loop's per-item error handler must not swallow a cancel
            pytest.fail("TaskCancelled was caught by except Exception")


# -- the task board, without a socket ------------------------------------------------------------

def board(grace: float = 0.0, log: logging.LoggerAdapter = LOG) -> TaskBoard:
    return TaskBoard(send=lambda frame: True, connected=lambda: True, progress_interval=1.0,
                     tasks=TaskRegistry(cancel_grace=grace), log=log)


def accepted(tasks: TaskBoard, task_id: str) -> TaskRun:
    """A run in the board's registry, as the runner adds each task it accepts."""
    run = TaskRun(Task(task_id, "x", {}, None, {}), None)
    with tasks._tasks.lock:
        tasks._tasks.runs[task_id] = run
    return run


@untraced
def test_a_hard_stop_landing_after_the_handler_returned_is_dropped() -> None:
    tasks = board(grace=1.0)
    run = accepted(tasks, "t1")
    control = run.control
    real = tasks._disarm
    landed: list[str] = []

    def disarm_hit_once(run: TaskRun) -> None:  # as if the exception arrived just after the handler returned
        if not landed:
            landed.append(run.task_id)
            raise _HardStop()
        real(run)

    tasks._disarm = disarm_hit_once  # type: ignore[method-assign]
    assert tasks.call(run, lambda message: "the real result", {}) == "the real result"
    assert landed == ["t1"] and tasks._tasks.view() == []
    assert current_task().task_id is None and control.closed


def test_a_task_cancelled_before_it_starts_never_runs() -> None:
    tasks = board()
    run = accepted(tasks, "t1")
    run.control.request_cancel("timed out after 1 s")
    with pytest.raises(TaskCancelled, match="timed out after 1 s"):
        tasks.call(run, lambda message: pytest.fail("the handler ran"), {})


@untraced
def test_hard_stops_never_escape_the_guarded_call() -> None:
    """Handlers that end at random moments while hard stops are fired at them as fast as possible:
    every call returns or raises TaskCancelled, and no exception lands after it (the pool's side).

    A short GIL switch interval makes the threads interleave often enough that some hard stops land
    after a handler returned (measured: a few per 450 calls), in the window the guarded call closes.
    """
    quiet = logging.getLogger("tests.cancel.quiet")
    quiet.setLevel(logging.ERROR)  # one warning per hard stop
    tasks = board(grace=1e-9, log=logging.LoggerAdapter(quiet, {}))
    stop = threading.Event()
    counts: list[Counter[str]] = [Counter() for _ in range(3)]  # one per thread: Counter += is not atomic
    errors: list[BaseException] = []

    def ticker() -> None:
        while not stop.is_set():
            tasks.tick(time.monotonic())
            time.sleep(0)

    def worker(n: int) -> None:
        rng = random.Random(n)
        try:
            for i in range(150):
                run = accepted(tasks, f"t{n}-{i}")
                control = run.control
                cancel_at, end_at = rng.randrange(50), rng.randrange(3000)

                def handler(message: Any, control: TaskControl = control) -> int:
                    total = 0
                    for j in range(end_at):
                        total += j
                        if j == cancel_at:
                            control.request_cancel("test")
                    return total

                try:
                    tasks.call(run, handler, {})
                    outcome = "returned"
                except TaskCancelled:
                    outcome = "stopped"
                for _ in range(300):  # where a leaked exception would land
                    pass
                counts[n][outcome] += 1
        except BaseException as exc:  # a leak: recorded, and the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,), name=f"test-worker-{n}") for n in range(3)]
    tick = threading.Thread(target=ticker, name="test-ticker")
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        tick.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    finally:
        stop.set()
        tick.join(5)
        sys.setswitchinterval(interval)
    assert errors == []
    outcomes = sum(counts, Counter())
    assert sum(outcomes.values()) == 450 and outcomes["stopped"] > 0, outcomes
    assert tasks._tasks.view() == []
