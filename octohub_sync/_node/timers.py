"""Task time limits, hard stops and the status line: the clock-driven work; and the ticks of the writes.

This is where a task times out: while tasks are in the node (or results wait for the hub's
confirmation), every :data:`TICK` the thread asks the runner to answer ``failed``
``TaskTimeout`` for every task past its limit (the deadlines are the task registry's,
_execution/task_run.py), lets the task board stop handlers past their cancel grace period, and posts
the writes due on a clock (delivery confirmations, progress). An idle node's loop sleeps
instead, until the next keep-alive, the status line or :data:`IDLE_SLEEP`: a laptop on
battery pays nothing for a connected node that has nothing to do; the :class:`Alarm` wakes
it when a task arrives or a result goes out. This thread is one of the two whose ticks prove
the node alive (_ops/liveness.py), so it never writes to the socket: what it finds due is posted
to the send thread (_transport/sender.py).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, Sequence

__all__ = ["IDLE_SLEEP", "TICK", "Alarm", "Timers"]

#: Longest sleep between two checks while tasks run (seconds): bounds how late a task time limit fires.
TICK = 0.25

#: Longest sleep of an idle node's loop (seconds); it tells how long (_ops/liveness.py), so a longer one is no wedge.
IDLE_SLEEP = 5.0


class Alarm:
    """Wakes the timers loop from an idle sleep when work arrives; a flag check while it is awake.

    No lock: the loop says it dozes (:meth:`doze`) before it looks whether there is work, and
    whoever brings work records it before it rings (:meth:`ring`), so one of the two always
    sees the other.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._dozing = False

    def ring(self) -> None:
        """Work arrived (a task, a result to confirm, a new connection to keep alive): look soon."""
        if self._dozing:
            self._event.set()

    def doze(self) -> None:
        """(The loop.) About to look for work: a ring from now on ends the next :meth:`sleep`."""
        self._event.clear()
        self._dozing = True

    def sleep(self, seconds: float) -> None:
        """(The loop.) Sleep up to ``seconds``, less if rung since :meth:`doze` (a sleep of a
        :data:`TICK` or less is not cut short: the work that rings comes once a task arrives, and a
        busy loop ticks anyway)."""
        if seconds <= TICK:
            self._dozing = False
        self._event.wait(seconds)
        self._dozing = False

    def wake(self) -> None:
        """End the current or next sleep whatever it waits for (the loop's stop)."""
        self._event.set()


class Timers:
    """Calls ``expire`` and ``tasks`` at every turn: every :data:`TICK` while ``busy()``, else every
    :data:`IDLE_SLEEP` at most; ``status()`` every ``status_interval`` s; posts each of ``writes`` every
    TICK while busy, and ``keep_alive`` when due.

    Args:
        expire: answers the tasks past their time limit (``TaskRunner.expire``).
        status: logs the status line.
        status_interval: seconds between status lines; 0 for none.
        tasks: hard-stops handlers past their grace (``TaskBoard.tick``).
        busy: whether tasks are in the node or results wait for confirmation (then the loop ticks).
        writes: jobs that write to the hub when due (``ResultDelivery.tick``, ``TaskBoard.send_progress``),
            handed to ``post`` (``Sender.post``), never run here.
        keep_alive_due / keep_alive: when the current connection's keep-alive is due (None: no
            connection), and the job that sends it (posted).
        on_tick: told the time of every turn of the loop and when the next comes at the latest
            (the node's liveness, see _ops/liveness.py).
        alarm: what wakes an idle loop (shared with whoever brings work).
    """

    def __init__(self, *, expire: Callable[[float], None], status: Callable[[], None], status_interval: float,
                 log: logging.LoggerAdapter, tasks: Optional[Callable[[float], None]] = None,
                 busy: Callable[[], bool] = lambda: True,
                 writes: Sequence[Callable[[], None]] = (),
                 keep_alive_due: Callable[[], Optional[float]] = lambda: None,
                 keep_alive: Callable[[], None] = lambda: None,
                 post: Callable[[Callable[[], None]], None] = lambda job: job(),
                 on_tick: Callable[[float, float], None] = lambda now, until: None,
                 alarm: Optional[Alarm] = None) -> None:
        self._expire = expire
        self._tasks = tasks
        self._busy = busy
        self._writes = tuple(writes)
        self._keep_alive_due, self._keep_alive = keep_alive_due, keep_alive
        self._post = post
        self._on_tick = on_tick
        self._status = status
        self._status_interval = status_interval
        self._log = log
        self._alarm = Alarm() if alarm is None else alarm
        self._stopping = False
        # Daemon: if the program exits without stop(), this thread must not hold it open.
        self._thread = threading.Thread(target=self._run, name="octohub-timers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._alarm.wake()
        if self._thread.ident is not None and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        next_status = time.monotonic() + self._status_interval if self._status_interval else None
        while True:
            self._alarm.doze()
            if self._stopping:
                return
            now = time.monotonic()
            try:
                sleep = self._step(now, next_status)
                if next_status is not None and now >= next_status:
                    next_status = now + self._status_interval
                    self._status()
            except Exception:  # a bug of ours must not stop time limits for the rest of the run
                self._log.exception("timer step failed; carrying on")
                sleep = TICK
            if next_status is not None:
                sleep = min(sleep, next_status - now)
            self._alarm.sleep(max(0.0, sleep))

    def _step(self, now: float, next_status: Optional[float]) -> float:
        """One look at ``now``; returns how long the loop may sleep."""
        busy = self._busy()
        sleep = TICK if busy else IDLE_SLEEP
        due = self._keep_alive_due()
        if due is not None:
            if due <= now:
                self._post(self._keep_alive)
                sleep = min(sleep, TICK)  # then the next one is planned from when this one went out
            else:
                sleep = min(sleep, due - now)
        self._on_tick(now, now + sleep)
        self._expire(now)
        if self._tasks is not None:
            self._tasks(now)
        if busy:
            for job in self._writes:
                self._post(job)
        return sleep
