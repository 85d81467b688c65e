"""Per-type limits: ``concurrency``, ``key`` and ``rate`` of ``register_task_handler`` (docs/limits.md).

A task of a limited type runs on a *lane*: one per (task type, key value), or one per type
without ``key``. A lane lets at most ``concurrency`` of its tasks run at once and at most N of
them begin within any window of the rate's period; the others wait in the lane's FIFO, outside
the pool, so that they never hold a worker that another type could use. Types without limits
never reach this module: the runner sends them to the pool as before.

Rates are a sliding-window log: a lane keeps the time each of its last N tasks *began* (on its
worker, not when it was queued), and admits a task only while those begun in the last period plus
those admitted but not begun yet are fewer than N. That holds "at most N begin in any window of
the period", even when the pool makes admitted tasks wait for a worker.

Every method except :meth:`Limits.close` is called with the runner's lock held (the same lock
guards the runner's jobs and the lanes: one owner for a task's state). The ``octohub-limits``
thread, started on the first task a rate holds back, sleeps on a condition of that lock until the
next lane may start a task.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Hashable, Optional

from .options import NO_KEY as _NO_KEY, TaskOptions

__all__ = ["Limits"]


class _Lane:
    """One (type, key): its tasks admitted and not finished, its recent starts, its waiting jobs."""

    __slots__ = ("task_type", "key", "options", "admitted", "unstarted", "starts", "waiting")

    def __init__(self, task_type: str, key: Hashable, options: TaskOptions) -> None:
        self.task_type, self.key, self.options = task_type, key, options
        self.admitted = 0  # sent to the pool, handler not finished yet
        self.unstarted = 0  # sent to the pool, handler not begun yet
        self.starts: deque[float] = deque()  # begin times within the rate's period, oldest first
        self.waiting: deque[Any] = deque()

    def due(self, now: float) -> Optional[float]:
        """When the next task may be admitted: ``now`` or later, None while only a finish or a begin frees it."""
        opts = self.options
        if opts.concurrency is not None and self.admitted >= opts.concurrency:
            return None
        rate = opts.rate
        if rate is None:
            return now
        while self.starts and self.starts[0] <= now - rate.period:
            self.starts.popleft()
        over = len(self.starts) + self.unstarted - rate.count
        if over < 0:
            return now
        if over >= len(self.starts):
            return None  # admitted tasks that have not begun yet fill the window
        return self.starts[over] + rate.period

    def idle(self, now: float) -> bool:
        rate = self.options.rate
        recent = rate is not None and bool(self.starts) and self.starts[-1] > now - rate.period
        return not self.admitted and not self.waiting and not recent


class Limits:
    """The lanes of every limited type, and the thread that starts rate-delayed tasks.

    Args:
        lock: the runner's lock; every method but :meth:`close` is called holding it.
        launch: sends a job to the pool, holding the lock; returns False for a job that must
            not run any more (answered while it waited: its time limit), which frees its place.
        clock: ``time.monotonic``; a test may pass another.
    """

    def __init__(self, *, lock: threading.Lock, launch: Callable[[Any], bool],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.options: dict[str, TaskOptions] = {}
        self._launch = launch
        self._clock = clock
        self._lanes: dict[tuple[str, Hashable], _Lane] = {}
        self._sweep_at = 64  # idle lanes (accounts seen once) are dropped when the table doubles
        self._timed: set[_Lane] = set()  # lanes with waiting tasks a rate holds back
        self._wake = threading.Condition(lock)
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def lane(self, task_type: str, key: Hashable) -> _Lane:
        """The lane of that type and key, made on first use."""
        lane = self._lanes.get((task_type, key))
        if lane is None:
            if len(self._lanes) >= self._sweep_at:
                self._sweep()
            lane = self._lanes[(task_type, key)] = _Lane(task_type, key, self.options[task_type])
        return lane

    def admit(self, lane: _Lane, job: Any) -> bool:
        """True: ``job`` may go to the pool now (its place is taken); False: it waits in its lane."""
        if not lane.waiting and self._may_start(lane):
            self._take(lane)
            return True
        lane.waiting.append(job)
        self._schedule(lane)
        return False

    def begun(self, lane: _Lane) -> None:
        """A job of ``lane`` begins on its worker now: the time its rate counts."""
        lane.unstarted -= 1
        if lane.options.rate is not None:
            lane.starts.append(self._clock())
            if lane.waiting:
                self._pump(lane)

    def finished(self, lane: _Lane, *, begun: bool = True) -> None:
        """A job of ``lane`` that went to the pool ended (or was cancelled before it began)."""
        lane.admitted -= 1
        if not begun:
            lane.unstarted -= 1
        self._pump(lane)

    def withdraw(self, lane: _Lane, job: Any) -> bool:
        """Take a waiting ``job`` out of its lane (a cancel); False if it was not waiting."""
        try:
            lane.waiting.remove(job)
        except ValueError:
            return False
        return True

    def clear(self) -> None:
        """Forget every lane (the pool is gone; the runner answers the jobs that waited).

        A handler still running past the drain ends on a lane no longer here: a restarted node
        starts with empty lanes.
        """
        for lane in self._lanes.values():
            lane.waiting.clear()
        self._lanes.clear()
        self._timed.clear()

    def waiting(self) -> list[tuple[str, Hashable, list[Any]]]:
        """(task type, key or None, waiting jobs in order) for every lane with waiting jobs."""
        return [(lane.task_type, None if lane.key is _NO_KEY else lane.key, list(lane.waiting))
                for lane in self._lanes.values() if lane.waiting]

    def close(self) -> None:
        """Stop the ``octohub-limits`` thread (call without the lock)."""
        with self._wake:
            self._closed = True
            thread, self._thread = self._thread, None
            self._wake.notify_all()
        if thread is not None:
            thread.join(5)

    def reopen(self) -> None:
        """Allow the thread again after :meth:`close` (a node started again)."""
        self._closed = False

    # -- inside -------------------------------------------------------------------------

    def _may_start(self, lane: _Lane) -> bool:
        now = self._clock()
        due = lane.due(now)
        return due is not None and due <= now

    def _take(self, lane: _Lane) -> None:
        lane.admitted += 1
        lane.unstarted += 1

    def _pump(self, lane: _Lane) -> None:
        """Send ``lane``'s waiting jobs to the pool while its limits allow, in order."""
        while lane.waiting and self._may_start(lane):
            job = lane.waiting.popleft()
            self._take(lane)
            if not self._launch(job):
                lane.admitted -= 1
                lane.unstarted -= 1
        self._schedule(lane)

    def _schedule(self, lane: _Lane) -> None:
        """Make sure the thread wakes when a rate lets ``lane`` start its next waiting job."""
        if lane.waiting and lane.options.rate is not None:
            due = lane.due(self._clock())
            if due is not None:
                self._timed.add(lane)
                self._ensure_thread()
                self._wake.notify()
                return
        self._timed.discard(lane)

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._closed:
            # Daemon: it only starts tasks that wait; stop() answers those and joins it (close()).
            self._thread = threading.Thread(target=self._loop, name="octohub-limits", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        with self._wake:
            while not self._closed:
                now = self._clock()
                soonest: Optional[float] = None
                for lane in list(self._timed):
                    self._pump(lane)
                    due = lane.due(now) if lane in self._timed else None
                    if due is not None and (soonest is None or due < soonest):
                        soonest = due
                self._wake.wait(None if soonest is None else max(0.0, soonest - self._clock()))

    def _sweep(self) -> None:
        now = self._clock()
        for key in [k for k, lane in self._lanes.items() if lane.idle(now)]:
            del self._lanes[key]
        self._sweep_at = max(64, 2 * len(self._lanes))
