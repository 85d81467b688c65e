"""Handlers at work: every handler call guarded, its progress sent, its hard stop carried out.

:meth:`TaskBoard.call` runs each handler on its pool thread with :func:`current_task`
set; :meth:`TaskBoard.tick` runs on the timers thread: with ``OCTOHUB_CANCEL_GRACE``, it
raises :class:`TaskCancelled` inside handlers that are still running that long after they
were cancelled (which ones, the task registry decides: task_run.py, the one owner of a
task's state); :meth:`TaskBoard.send_progress` sends the progress that is due.

A hard stop uses CPython's ``PyThreadState_SetAsyncExc``: the exception is raised in
the handler's thread the next time that thread runs Python bytecode. It cannot
interrupt a blocking C call (``time.sleep``, a socket read, a lock wait, a long
computation inside a C extension): the exception comes when that call returns. A
handler that catches it (``except BaseException:``, a bare ``except:``) runs on; the
node raises it only once. It is raised only into a thread still running that very
task, decided under this board's lock, and one that lands after the handler returned
is dropped, so it never reaches the worker pool.

A handler with ``isolation="process"`` (_isolation/boundary.py) runs in a child process: its hard
stop kills that child instead (the handler object's ``kill(task_id)``), a real stop even
inside a C call, and its thread then raises :class:`HardStop` itself.
"""
from __future__ import annotations

import ctypes
import logging
import sys
import threading
import time
from typing import Any, Callable, Mapping, Optional

from ..exceptions import TaskCancelled
from .builtin_tasks import TaskHandler
from .task_control import TaskControl, activate, deactivate
from .task_run import TaskRegistry, TaskRun

__all__ = ["HardStop", "TaskBoard"]

# ctypes.pythonapi exists only in CPython; elsewhere the hard stop is off (and says so).
_SET_ASYNC_EXC = getattr(getattr(ctypes, "pythonapi", None), "PyThreadState_SetAsyncExc", None)


class _HardStop(TaskCancelled):
    """What the node raises inside a handler's thread; the hub is told ``TaskCancelled`` with the reason."""


#: Raised by an isolated handler whose child the hard stop killed (answered as the thread-level stop).
HardStop = _HardStop


def _raise_in(ident: int, exc: Optional[type]) -> bool:
    """Raise ``exc`` in thread ``ident`` at its next bytecode; ``None`` takes back one not yet raised."""
    if _SET_ASYNC_EXC is None:
        return False
    # ctypes passes None as NULL, which is how the C API says "clear".
    return bool(_SET_ASYNC_EXC(ctypes.c_ulong(ident), None if exc is None else ctypes.py_object(exc)))


class TaskBoard:
    """Runs handlers under control, carries out hard stops and sends progress, for the runs of ``tasks``.

    Args:
        send: sends one ``task_progress`` frame if the connection is ready, else drops it
            (``ResultDelivery.send_progress``); never queues it.
        connected: whether the node is connected now (progress reported otherwise is dropped).
        progress_interval: least time between two progress frames of one task (OCTOHUB_PROGRESS_INTERVAL).
        tasks: the registry of the node's tasks (task_run.py): which handlers run, which are due
            for a hard stop (its ``grace``, OCTOHUB_CANCEL_GRACE).
    """

    def __init__(self, *, send: Callable[[str], Any], connected: Callable[[], bool], progress_interval: float,
                 tasks: TaskRegistry, log: logging.LoggerAdapter) -> None:
        self._send = send
        self._connected = connected
        self._interval = progress_interval
        self._tasks = tasks
        self._log = log
        # Guards which thread runs which task (a run's ``thread`` and ``hard_stopped``): a hard stop is
        # raised only into a thread still in that very task's handler.
        self._lock = threading.Lock()
        self._tracer_warned = False  # the hard stop is off under a tracer: said once
        # Held while a progress frame is taken and sent: one task's frames never overtake each other.
        self._send_lock = threading.Lock()
        if tasks.grace and _SET_ASYNC_EXC is None:
            log.warning("OCTOHUB_CANCEL_GRACE is set, but this Python cannot raise in another thread: no hard stop")

    # -- on a pool thread ------------------------------------------------------------------------

    def call(self, run: TaskRun, handler: TaskHandler, message: Mapping[str, Any]) -> Any:
        """Run ``handler(message)`` as ``run``'s task on this thread.

        Returns:
            What the handler returned.

        Raises:
            Whatever the handler raised; :class:`TaskCancelled` without running it if the task
            was cancelled before it started, or with the reason after a hard stop.
        """
        control = run.control
        token = activate(control)
        try:
            self._arm(run, handler)
            control.check_cancelled()  # cancelled, or past its time limit, while it waited for a worker
            return handler(message)
        except _HardStop:
            raise TaskCancelled(f"{control.cancel_reason}; stopped after {self._tasks.grace:g} s "
                                "(OCTOHUB_CANCEL_GRACE)") from None
        finally:
            # A hard stop can land anywhere until _disarm() has run; one that lands here comes after
            # the handler ended, and is dropped. It is raised once at most, so the loop ends.
            while True:
                try:
                    self._disarm(run)
                    break
                except TaskCancelled:
                    pass
            deactivate(token)
            self._last_progress(control)

    def _arm(self, run: TaskRun, handler: TaskHandler) -> None:
        run.control.attach(self._connected)
        # An isolated handler's hard stop kills its child (see the module docstring).
        run.kill, run.pid_of = getattr(handler, "kill", None), getattr(handler, "pid_of", None)
        run.began, run.began_mono = time.time(), time.monotonic()
        if not self._tasks.grace:  # no hard stop without a grace: nobody decides on the thread, no lock
            run.thread = threading.get_ident()
            return
        with self._lock:
            run.thread = threading.get_ident()

    def _disarm(self, run: TaskRun) -> None:
        if not self._tasks.grace:
            run.thread = None
            return
        with self._lock:
            ident, run.thread = run.thread, None
            if ident is not None and run.hard_stopped and run.kill is None:
                _raise_in(ident, None)  # raised but not yet delivered: take it back

    def _last_progress(self, control: TaskControl) -> None:
        if control.last_progress is None:  # the common case: the handler never reported progress
            control.closed = True
            return
        with self._send_lock:
            frame = control.close()
            if frame is not None:
                self._send_quietly(frame)

    # -- on the timers thread --------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Hard-stop handlers past their grace period (the timers thread: no network here)."""
        if not self._tasks.grace:
            return
        due = self._tasks.due_for_hard_stop(self._tasks.in_handlers(), now)
        if not due:
            return
        with self._lock:
            stopped = self._hard_stops(due)
        for run in stopped:
            self._log.warning("task %s still ran %g s after it was cancelled (%s): %s", run.task_id,
                              self._tasks.grace, run.control.cancel_reason,
                              "killed its child process" if run.kill else "raised TaskCancelled in its thread")

    def send_progress(self) -> None:
        """Send the progress that is due (the send thread: the write may wait for the socket)."""
        now = time.monotonic()
        for run in self._tasks.in_handlers():
            if run.control.has_unsent_progress:
                with self._send_lock:
                    frame = run.control.take_progress(now, self._interval)
                    if frame is not None:
                        self._send_quietly(frame)

    def _hard_stops(self, due: list[TaskRun]) -> list[TaskRun]:
        """Stop every run of ``due`` whose thread is still in its handler (lock held)."""
        due = [run for run in due if run.thread is not None]  # still in its handler, decided under the lock
        stopped = []
        for run in due:
            # An isolated task's child may still be starting: then it is killed at a later tick.
            if run.kill is not None and run.kill(run.task_id):
                run.hard_stopped = True
                stopped.append(run)
        threads = [run for run in due if run.kill is None]
        if threads and sys.gettrace() is not None:
            # Under a line tracer (coverage, a debugger) an exception raised into a spinning thread can
            # leave it spinning for good, holding the GIL: cancellation stays cooperative there.
            if not self._tracer_warned:
                self._tracer_warned = True
                self._log.warning("a tracer (coverage, a debugger) runs in this process: OCTOHUB_CANCEL_GRACE "
                                  "hard stops are not raised; cancelled handlers stop when they check the flag")
            return stopped
        for run in threads:
            run.hard_stopped = True  # raised once at most, whether or not it could be
            if run.thread is not None and _raise_in(run.thread, _HardStop):
                stopped.append(run)
        return stopped

    def _send_quietly(self, frame: str) -> None:
        try:
            self._send(frame)
        except Exception:  # progress is best-effort: it must never fail a task or stop the timers
            self._log.exception("could not send a task_progress frame")
