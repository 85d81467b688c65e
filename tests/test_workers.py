"""The task pool (_execution/pool.py): loops on the executor's threads, started on demand, never stranding a task."""
from __future__ import annotations

import logging
import random
import subprocess
import sys
import threading

import pytest

from octohub_sync._execution.pool import Workers

from .conftest import wait_until

LOG = logging.LoggerAdapter(logging.getLogger("octohub_sync.test"), {})


class Recorder:
    """A run function whose tasks block until released, counting how many run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.done: list[str] = []
        self.most = 0
        self.release: dict[str, threading.Event] = {}
        self.threads: set[str] = set()

    def __call__(self, task_id: str) -> None:
        gate = self.release.setdefault(task_id, threading.Event())
        with self.lock:
            self.running.add(task_id)
            self.most = max(self.most, len(self.running))
            self.threads.add(threading.current_thread().name)
        try:
            if not gate.wait(20):
                raise AssertionError(f"{task_id} was never released")
        finally:
            with self.lock:
                self.running.discard(task_id)
                self.done.append(task_id)

    def let_go(self, task_id: str) -> None:
        self.release.setdefault(task_id, threading.Event()).set()


@pytest.fixture(params=[True, False], ids=["loops", "direct"])
def loops(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_a_task_never_waits_behind_running_ones_while_a_worker_is_free(loops: bool) -> None:
    rec = Recorder()
    workers = Workers(rec, 4, log=LOG, loops=loops)
    rng = random.Random(7)
    try:
        # Waves of quick tasks, then long ones: each long one must start at once while fewer than 4 run.
        for wave in range(30):
            quick = [f"q{wave}-{i}" for i in range(rng.randint(1, 6))]
            for tid in quick:
                rec.let_go(tid)
                workers.put(tid)
            assert wait_until(lambda: all(t in rec.done for t in quick), 10)
            held = [f"h{wave}-{i}" for i in range(rng.randint(1, 4))]
            for n, tid in enumerate(held, 1):
                workers.put(tid)
                assert wait_until(lambda: len(rec.running) == n, 10), (wave, tid, rec.running)
            for tid in held:
                rec.let_go(tid)
            assert wait_until(lambda: not rec.running, 10)
    finally:
        for tid in list(rec.release):
            rec.let_go(tid)
        workers.shutdown(wait=True)


def test_never_more_than_max_workers_at_once_and_every_task_runs(loops: bool) -> None:
    rec = Recorder()
    workers = Workers(rec, 3, log=LOG, loops=loops)
    ids = [f"t{i}" for i in range(40)]
    try:
        for tid in ids:
            workers.put(tid)
        assert wait_until(lambda: len(rec.running) == 3, 10)
        for tid in ids:
            rec.let_go(tid)
        assert wait_until(lambda: len(rec.done) == 40, 10)
        assert rec.most == 3 and sorted(rec.done) == sorted(ids)
        assert all(name.startswith("octohub-task") for name in rec.threads) and len(rec.threads) <= 3
    finally:
        workers.shutdown(wait=True)


def test_a_failing_run_is_logged_and_the_worker_goes_on(caplog: pytest.LogCaptureFixture, loops: bool) -> None:
    ran: list[str] = []

    def run(task_id: str) -> None:
        if task_id == "bad":
            raise RuntimeError("a bug of ours")
        ran.append(task_id)

    workers = Workers(run, 1, log=LOG, loops=loops)
    try:
        with caplog.at_level(logging.ERROR, logger="octohub_sync"):
            workers.put("bad")
            workers.put("good")
            assert wait_until(lambda: ran == ["good"], 10)
        assert any("running task bad failed" in r.getMessage() for r in caplog.records)
    finally:
        workers.shutdown(wait=True)


def test_shutdown_drops_what_no_worker_took_ends_the_threads_and_refuses_more() -> None:
    rec = Recorder()
    workers = Workers(rec, 1, log=LOG)
    workers.put("running")
    assert wait_until(lambda: rec.running == {"running"}, 10)
    workers.put("queued")
    stopper = threading.Thread(target=workers.shutdown, kwargs={"wait": True})
    stopper.start()
    rec.let_go("running")
    stopper.join(10)
    assert not stopper.is_alive()
    assert rec.done == ["running"]  # "queued" never ran
    assert not any(t.name.startswith("octohub-task") and t.is_alive() for t in threading.enumerate()
                   if t.name in rec.threads)
    with pytest.raises(RuntimeError):
        workers.put("late")


@pytest.mark.parametrize("loops", [True, False], ids=["loops", "direct"])
def test_an_interpreter_with_a_pool_never_shut_down_still_exits(loops: bool) -> None:
    # A script that ran tasks and never stopped its node: idle loops must not hold its exit.
    script = (
        "import logging, threading\n"
        "from octohub_sync._execution.pool import Workers\n"
        "done = threading.Event()\n"
        f"w = Workers(lambda tid: done.set(), 8, log=logging.LoggerAdapter(logging.getLogger('x'), {{}}), loops={loops})\n"
        "for i in range(20): w.put(str(i))\n"
        "assert done.wait(10)\n"
        "print('ran')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.strip() == "ran", proc.stderr
