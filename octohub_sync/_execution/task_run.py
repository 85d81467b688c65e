"""A task's life on the node, from admission to its answer: one :class:`TaskRun` per task, one registry.

A :class:`TaskRun` holds everything the node knows about one accepted task: its time
limit (``deadline``), its cancel flag and progress (``control``, what the handler sees
through ``current_task()``), whether the hub already has its answer (``timed_out``,
kept once, in the control), where it waits for a limit (``lane``), which thread runs
its handler and whether the hard stop was raised there.

:class:`TaskRegistry` holds the runs of every task accepted and not finished, waiting
or running, and decides on the clock: which tasks are past their time limit
(:meth:`TaskRegistry.past_deadline`) and which handlers are due for a hard stop, a
cancel grace after their cancel (:meth:`TaskRegistry.due_for_hard_stop`). The runner
(runner.py) admits, runs and answers tasks through it; the task board (handler_calls.py)
carries out hard stops and sends progress for the runs it lists; the timers thread
(_node/timers.py) drives both. Its lock is the runner's: a task's admission, its start, its
end and its answer change the registry and the limits' lanes under one lock.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from .._wire.protocol import Task
from .task_control import TaskControl

__all__ = ["TaskRegistry", "TaskRun"]


class TaskRun:
    """One accepted task, from admission until its handler is done (or it is answered without running)."""

    __slots__ = ("task", "deadline", "lane", "control", "started", "thread", "began", "began_mono",
                 "hard_stopped", "kill", "pid_of", "attempt", "waiting_retry")

    def __init__(self, task: Task, deadline: Optional[float], lane: Any = None) -> None:
        self.task = task
        #: ``time.monotonic()`` past which it is answered TaskTimeout; None without a time limit.
        self.deadline = deadline
        #: Its type's limits (limits.py), None for a type without: where it waits and what it holds.
        self.lane = lane
        #: The task as its handler sees it (current_task()): the cancel flag, progress, answered.
        self.control = TaskControl(task.task_id, task.task_type)
        self.started = False  # a worker picked it up
        #: The ident of the thread in its handler (set and cleared by the task board), else None.
        self.thread: Optional[int] = None
        self.began = self.began_mono = 0.0  # when its handler began (Unix time, monotonic)
        self.hard_stopped = False  # the hard stop was raised in its thread (once at most)
        # An isolated handler's hard stop kills its child (_isolation/pool.py): its kill(task_id), pid_of(task_id).
        self.kill: Optional[Callable[[str], bool]] = None
        self.pid_of: Optional[Callable[[str], Optional[int]]] = None
        self.attempt = 1  # which attempt runs or waits (``retries=``: retry.py)
        self.waiting_retry = False  # between two attempts: no worker, no limit slot

    @property
    def task_id(self) -> str:
        return self.task.task_id

    def next_attempt(self) -> None:
        """Its handler failed and gets another attempt (``retries=``): it waits, holding nothing, with a
        fresh cancel flag and progress; its time limit (``deadline``) stays, covering every attempt."""
        self.started = False
        self.attempt += 1
        old = self.control
        self.control = TaskControl(old.task_id, old.task_type)
        self.control.task_key, self.control.attempt = old.task_key, self.attempt
        self.waiting_retry = True

    @property
    def timed_out(self) -> bool:
        """The hub has this task's answer (TaskTimeout); its handler may still run."""
        return self.control.answered

    def view(self, now: float) -> dict[str, Any]:
        """What ``running_tasks()`` and ``/tasks`` show of a running task."""
        control = self.control
        last = control.last_progress
        view = {
            "task_id": self.task.task_id,
            "task_type": self.task.task_type,
            "started": round(self.began, 3),
            "elapsed": round(now - self.began_mono, 3),
            "progress": None if last is None else {"fraction": last[0], "message": last[1], "at": round(last[2], 3)},
            "cancel_requested": control.cancel_reason is not None,
            "cancel_reason": control.cancel_reason,
        }
        if self.pid_of is not None:
            view["child_pid"] = self.pid_of(self.task.task_id)
        return view


class TaskRegistry:
    """Every task the node accepted and has not finished: ``runs`` by task id, under ``lock``.

    Args:
        lock: the runner's lock (a new one by default); ``runs`` and ``running`` change only holding it.
        cancel_grace: seconds after a cancel before the hard stop; 0 for none (OCTOHUB_CANCEL_GRACE).
    """

    def __init__(self, *, lock: Optional[threading.Lock] = None, cancel_grace: float = 0.0) -> None:
        self.lock = threading.Lock() if lock is None else lock
        self.grace = cancel_grace
        self.runs: dict[str, TaskRun] = {}
        self.running = 0  # runs whose worker picked them up and has not finished them
        self._idle = threading.Condition(self.lock)
        self._draining = 0  # drain() calls waiting: an end notifies only when someone waits

    # -- holding the lock ---------------------------------------------------------------------

    def ended(self) -> None:
        """A run left ``runs``, or was answered (lock held): wake a drain that waits for it."""
        if self._draining:
            self._idle.notify_all()

    def past_deadline(self, now: float) -> list[TaskRun]:
        """The runs whose time limit passed by ``now`` and that were not answered yet (lock held).

        The caller answers them TaskTimeout and then marks each answered (``control.request_cancel(...,
        answered=True)``), still holding the lock.
        """
        return [run for run in self.runs.values()
                if run.deadline is not None and now >= run.deadline and not run.control.answered]

    # -- taking the lock ----------------------------------------------------------------------

    def drain(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` for every run not answered yet to end; return the ids still running.

        A task answered TaskTimeout is not waited for (the hub has its answer): see :meth:`overdue`.
        """
        deadline = time.monotonic() + timeout
        with self.lock:
            self._draining += 1
            try:
                while any(not run.timed_out for run in self.runs.values()):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._idle.wait(left)
            finally:
                self._draining -= 1
            return [tid for tid, run in self.runs.items() if not run.timed_out]

    def overdue(self) -> list[str]:
        """Ids of the tasks answered TaskTimeout whose handlers still run (their results will be discarded)."""
        with self.lock:
            return [tid for tid, run in self.runs.items() if run.timed_out]

    def counts(self) -> tuple[int, int]:
        """(running, queued) right now; queued counts the tasks waiting for a limit too."""
        with self.lock:
            return self.running, len(self.runs) - self.running

    def in_handlers(self) -> list[TaskRun]:
        """The runs whose handler runs now, the longest-running first."""
        with self.lock:
            runs = [run for run in self.runs.values() if run.thread is not None]
        return sorted(runs, key=lambda run: run.began_mono)

    def due_for_hard_stop(self, runs: list[TaskRun], now: float) -> list[TaskRun]:
        """Those of ``runs`` cancelled a grace ago and not hard-stopped yet (none without a grace)."""
        if not self.grace:
            return []
        return [run for run in runs if not run.hard_stopped and run.control.cancel_requested_at is not None
                and now - run.control.cancel_requested_at >= self.grace]

    def view(self) -> list[dict[str, Any]]:
        """Every task whose handler runs now, the longest-running first (``running_tasks()``)."""
        now = time.monotonic()
        return [run.view(now) for run in self.in_handlers()]

    def oldest_age(self) -> float:
        """Seconds the longest-running handler has been running; 0 when none runs."""
        runs = self.in_handlers()
        return time.monotonic() - runs[0].began_mono if runs else 0.0
