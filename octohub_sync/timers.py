"""Task time limits, hard stops and the status line: the clock-driven work; and the ticks of the writes.

This is where a task times out: every :data:`TICK` the thread asks the runner to answer
``failed`` ``TaskTimeout`` for every task past its limit (the deadlines are the task
registry's, lifecycle.py), then lets the task board stop handlers past
their cancel grace period. This thread is one of the two whose ticks prove the node alive
(liveness.py), so it never writes to the socket: the writes that are due on a clock
(delivery confirmations, progress) are posted to the send thread (sender.py) each tick.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, Sequence

__all__ = ["Timers"]

#: Longest sleep between two checks (seconds): bounds how late a task time limit fires.
TICK = 0.25


class Timers:
    """Calls ``expire`` and ``tasks`` every :data:`TICK`, ``status()`` every ``status_interval`` s,
    and posts each of ``writes`` every :data:`TICK`.

    Args:
        expire: answers the tasks past their time limit (``TaskRunner.expire``).
        status: logs the status line.
        status_interval: seconds between status lines; 0 for none.
        tasks: hard-stops handlers past their grace (``TaskBoard.tick``).
        writes: jobs that write to the hub when due (``ResultDelivery.tick``, ``TaskBoard.send_progress``,
            the keep-alive ping),
            handed to ``post`` (``Sender.post``), never run here.
        on_tick: told the time of every turn of the loop (the node's liveness, see liveness.py).
    """

    def __init__(self, *, expire: Callable[[float], None], status: Callable[[], None], status_interval: float,
                 log: logging.LoggerAdapter, tasks: Optional[Callable[[float], None]] = None,
                 writes: Sequence[Callable[[], None]] = (),
                 post: Callable[[Callable[[], None]], None] = lambda job: job(),
                 on_tick: Callable[[float], None] = lambda now: None) -> None:
        self._expire = expire
        self._tasks = tasks
        self._writes = tuple(writes)
        self._post = post
        self._on_tick = on_tick
        self._status = status
        self._status_interval = status_interval
        self._log = log
        self._stopping = threading.Event()
        # Daemon: if the program exits without stop(), this thread must not hold it open.
        self._thread = threading.Thread(target=self._run, name="octohub-timers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread.ident is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        next_status: Optional[float] = time.monotonic() + self._status_interval if self._status_interval else None
        while not self._stopping.wait(TICK):
            now = time.monotonic()
            try:
                self._on_tick(now)
                self._expire(now)
                if self._tasks is not None:
                    self._tasks(now)
                for job in self._writes:
                    self._post(job)
                if next_status is not None and now >= next_status:
                    next_status = now + self._status_interval
                    self._status()
            except Exception:  # a bug of ours must not stop time limits for the rest of the run
                self._log.exception("timer step failed; carrying on")
