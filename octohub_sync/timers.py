"""Task time limits, delivery confirmations and the status line: the node's clock-driven work.

This is where a task times out: every :data:`TICK` the thread asks the runner to answer
``failed`` ``TaskTimeout`` for every task past its limit (the limits themselves are kept
by :class:`~octohub_sync.runner.TaskRunner`).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

__all__ = ["Timers"]

#: Longest sleep between two checks (seconds): bounds how late a task time limit fires.
TICK = 0.25


class Timers:
    """Calls ``expire(now)`` and ``confirm(now)`` every :data:`TICK`, ``status()`` every ``status_interval`` s.

    Args:
        expire: answers the tasks past their time limit (``TaskRunner.expire``).
        confirm: asks the hub to confirm results sent since its last confirmation
            (``ResultDelivery.confirm_due``).
        status: logs the status line.
        status_interval: seconds between status lines; 0 for none.
        on_tick: told the time of every turn of the loop (the node's liveness, see liveness.py).
    """

    def __init__(self, *, expire: Callable[[float], None], confirm: Callable[[float], None],
                 status: Callable[[], None], status_interval: float,
                 log: logging.LoggerAdapter, on_tick: Callable[[float], None] = lambda now: None) -> None:
        self._expire = expire
        self._confirm = confirm
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
                self._confirm(now)
                if next_status is not None and now >= next_status:
                    next_status = now + self._status_interval
                    self._status()
            except Exception:  # a bug of ours must not stop time limits for the rest of the run
                self._log.exception("timer step failed; carrying on")
