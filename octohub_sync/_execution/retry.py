"""Retries on the node (``retries=``, ``retry_on=``, ``retry_backoff=``, ``retry_backoff_max=``; docs/retries.md).

:class:`RetryPolicy` is the decision as a value: which exception is retried, and how long the
next attempt waits (a pure function of the attempt, its randomness an argument, as
_node/backoff.py). :class:`RetryWaits` holds the tasks between two attempts: they hold no worker
and no limit slot; at their time the runner sends them back through their lane (limits.py) or to
the pool, as a new task would go. Its ``octohub-retries`` thread sleeps on a condition of the
runner's lock until the next one is due, and is started only by the first retry.
"""
from __future__ import annotations

import heapq
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..exceptions import TaskCancelled

__all__ = ["RetryPolicy", "RetryWaits"]

#: The jitter: each delay is the nominal one times a factor in [1 - JITTER, 1 + JITTER].
JITTER = 0.25


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``retries`` more attempts after the first, for the exceptions in ``retry_on``."""

    retries: int
    retry_on: tuple[type, ...] = (Exception,)
    #: Seconds before attempt 2; doubled for each attempt after.
    backoff: float = 1.0
    #: Ceiling of any delay, jitter included.
    backoff_max: float = 60.0

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds between the end of attempt ``attempt`` (1-based) and the start of the next."""
        nominal = self.backoff * 2 ** min(max(attempt, 1) - 1, 62)  # capped exponent: no float overflow
        return min(self.backoff_max, nominal * (1.0 - JITTER + 2 * JITTER * rand()))

    def retries_on(self, exc: BaseException, attempt: int) -> bool:
        """Whether attempt ``attempt`` (1-based), which raised ``exc``, gets another one.

        A cancel or a time limit (TaskCancelled) never does. An isolated child's exception arrives as a
        stand-in of the same name (_isolation/boundary.py): it matches a ``retry_on`` type by that name.
        """
        if attempt > self.retries or isinstance(exc, TaskCancelled) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, self.retry_on):
            return True
        if getattr(exc, "child_traceback", None) is None:
            return False
        name = type(exc).__name__
        return any(cls.__name__ == name for cls in self.retry_on)


class RetryWaits:
    """The tasks waiting for their next attempt, by due time (every method but :meth:`close` under ``lock``).

    Args:
        lock: the runner's lock.
        launch: called with a job when it is due (lock held): it goes back through its limits.
    """

    def __init__(self, *, lock: threading.Lock, launch: Callable[[Any], None]) -> None:
        self._launch = launch
        self._wake = threading.Condition(lock)
        self._due: list[tuple[float, int, Any]] = []  # (monotonic due time, sequence, job): a heap
        self._seq = 0
        self._closed = False
        self._thread: Optional[threading.Thread] = None

    def wait(self, job: Any, delay: float) -> None:
        """``job`` runs again ``delay`` seconds from now (lock held)."""
        self._seq += 1
        heapq.heappush(self._due, (time.monotonic() + delay, self._seq, job))
        if self._thread is None:
            # Daemon: it only waits on the clock; close() ends and joins it with the node.
            self._thread = threading.Thread(target=self._loop, name="octohub-retries", daemon=True)
            self._thread.start()
        self._wake.notify()

    def remove(self, job: Any) -> None:
        """``job`` was answered while it waited (a cancel, its time limit, the stop): it never runs again."""
        self._due = [entry for entry in self._due if entry[2] is not job]
        heapq.heapify(self._due)

    def clear(self) -> None:
        """Every waiting job was answered (the node's drain, lock held): none runs again."""
        self._due.clear()

    def close(self) -> None:
        """Stop the thread (without the lock); the jobs still waiting are the runner's to answer."""
        with self._wake:
            self._closed = True
            self._due.clear()
            self._wake.notify()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        with self._wake:
            self._closed = False

    def _loop(self) -> None:
        with self._wake:
            while not self._closed:
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    self._launch(heapq.heappop(self._due)[2])
                self._wake.wait(None if not self._due else self._due[0][0] - now)
