"""The node's running tasks: every handler call guarded, progress sent, hard stops, the live view.

:meth:`TaskBoard.call` runs each handler on its pool thread with :func:`current_task`
set; :meth:`TaskBoard.tick` runs on the timers thread: it sends the progress that is due
and, with ``OCTOHUB_CANCEL_GRACE``, raises :class:`TaskCancelled` inside handlers that
are still running that long after they were cancelled.

A hard stop uses CPython's ``PyThreadState_SetAsyncExc``: the exception is raised in
the handler's thread the next time that thread runs Python bytecode. It cannot
interrupt a blocking C call (``time.sleep``, a socket read, a lock wait, a long
computation inside a C extension): the exception comes when that call returns. A
handler that catches it (``except BaseException:``, a bare ``except:``) runs on; the
node raises it only once. It is raised only into a thread still running that very
task, decided under this board's lock, and one that lands after the handler returned
is dropped, so it never reaches the worker pool.

A handler with ``isolation="process"`` (isolation.py) runs in a child process: its hard
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

from .exceptions import TaskCancelled
from .handlers import TaskHandler
from .task_control import TaskControl, activate, deactivate

__all__ = ["HardStop", "TaskBoard"]

# ctypes.pythonapi exists only in CPython; elsewhere the hard stop is off (and says so).
_SET_ASYNC_EXC = getattr(getattr(ctypes, "pythonapi", None), "PyThreadState_SetAsyncExc", None)


class _HardStop(TaskCancelled):
    """What the node raises inside a handler's thread; the hub is told ``TaskCancelled`` with the reason."""


#: Raised by an isolated handler whose child the hard stop killed (answered as the thread-level stop).
HardStop = _HardStop


class _Slot:
    """A task whose handler runs now, on thread ``ident``."""

    __slots__ = ("control", "ident", "started", "started_mono", "stopped", "kill", "pid_of")

    def __init__(self, control: TaskControl, ident: int, handler: Any = None) -> None:
        self.control = control
        self.ident = ident
        # An isolated handler's hard stop kills its child (see the module docstring).
        self.kill: Optional[Callable[[str], bool]] = getattr(handler, "kill", None)
        self.pid_of: Optional[Callable[[str], Optional[int]]] = getattr(handler, "pid_of", None)
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.stopped = False  # the hard stop was raised in its thread

    def view(self, now: float) -> dict[str, Any]:
        control = self.control
        last = control.last_progress
        view = {
            "task_id": control.task_id,
            "task_type": control.task_type,
            "started": round(self.started, 3),
            "elapsed": round(now - self.started_mono, 3),
            "progress": None if last is None else {"fraction": last[0], "message": last[1], "at": round(last[2], 3)},
            "cancel_requested": control.cancel_reason is not None,
            "cancel_reason": control.cancel_reason,
        }
        if self.pid_of is not None:
            view["child_pid"] = self.pid_of(control.task_id)  # type: ignore[arg-type]
        return view


def _raise_in(ident: int, exc: Optional[type]) -> bool:
    """Raise ``exc`` in thread ``ident`` at its next bytecode; ``None`` takes back one not yet raised."""
    if _SET_ASYNC_EXC is None:
        return False
    # ctypes passes None as NULL, which is how the C API says "clear".
    return bool(_SET_ASYNC_EXC(ctypes.c_ulong(ident), None if exc is None else ctypes.py_object(exc)))


class TaskBoard:
    """Runs handlers under control and keeps the list of the tasks running now.

    Args:
        send: sends one ``task_progress`` frame if the connection is ready, else drops it
            (``ResultDelivery.send_progress``); never queues it.
        connected: whether the node is connected now (progress reported otherwise is dropped).
        progress_interval: least time between two progress frames of one task (OCTOHUB_PROGRESS_INTERVAL).
        cancel_grace: seconds after a cancel before the hard stop; 0 for none (OCTOHUB_CANCEL_GRACE).
    """

    def __init__(self, *, send: Callable[[str], Any], connected: Callable[[], bool], progress_interval: float,
                 cancel_grace: float, log: logging.LoggerAdapter) -> None:
        self._send = send
        self._connected = connected
        self._interval = progress_interval
        self._grace = cancel_grace
        self._log = log
        self._lock = threading.Lock()  # guards _running and every slot's ``stopped``
        self._tracer_warned = False  # the hard stop is off under a tracer: said once
        # Held while a progress frame is taken and sent: one task's frames never overtake each other.
        self._send_lock = threading.Lock()
        self._running: dict[str, _Slot] = {}
        if cancel_grace and _SET_ASYNC_EXC is None:
            log.warning("OCTOHUB_CANCEL_GRACE is set, but this Python cannot raise in another thread: no hard stop")

    # -- on a pool thread ------------------------------------------------------------------------

    def call(self, control: TaskControl, handler: TaskHandler, message: Mapping[str, Any]) -> Any:
        """Run ``handler(message)`` as ``control``'s task on this thread.

        Returns:
            What the handler returned.

        Raises:
            Whatever the handler raised; :class:`TaskCancelled` without running it if the task
            was cancelled before it started, or with the reason after a hard stop.
        """
        token = activate(control)
        try:
            self._arm(control, handler)
            control.check_cancelled()  # cancelled, or past its time limit, while it waited for a worker
            return handler(message)
        except _HardStop:
            raise TaskCancelled(f"{control.cancel_reason}; stopped after {self._grace:g} s "
                                "(OCTOHUB_CANCEL_GRACE)") from None
        finally:
            # A hard stop can land anywhere until _disarm() has run; one that lands here comes after
            # the handler ended, and is dropped. It is raised once at most, so the loop ends.
            while True:
                try:
                    self._disarm(control.task_id)  # type: ignore[arg-type]
                    break
                except TaskCancelled:
                    pass
            deactivate(token)
            self._last_progress(control)

    def _arm(self, control: TaskControl, handler: TaskHandler) -> None:
        control.attach(self._connected)
        slot = _Slot(control, threading.get_ident(), handler)
        with self._lock:
            self._running[control.task_id] = slot  # type: ignore[index]

    def _disarm(self, task_id: str) -> None:
        with self._lock:
            slot = self._running.pop(task_id, None)
            if slot is not None and slot.stopped and slot.kill is None:
                _raise_in(slot.ident, None)  # raised but not yet delivered: take it back

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
        if not self._grace:
            return
        with self._lock:
            if not self._running:
                return
            stopped = self._hard_stops(list(self._running.values()), now)
        for slot in stopped:
            self._log.warning("task %s still ran %g s after it was cancelled (%s): %s", slot.control.task_id,
                              self._grace, slot.control.cancel_reason,
                              "killed its child process" if slot.kill else "raised TaskCancelled in its thread")

    def send_progress(self) -> None:
        """Send the progress that is due (the send thread: the write may wait for the socket)."""
        with self._lock:
            if not self._running:
                return
            slots = list(self._running.values())
        now = time.monotonic()
        for slot in slots:
            if slot.control.has_unsent_progress:
                with self._send_lock:
                    frame = slot.control.take_progress(now, self._interval)
                    if frame is not None:
                        self._send_quietly(frame)

    def _hard_stops(self, slots: list[_Slot], now: float) -> list[_Slot]:
        """Raise in every thread due for it (under the lock, so the slot is still that thread's task)."""
        stopped = []
        for slot in slots:
            # An isolated task's child may still be starting: then it is killed at a later tick.
            if slot.kill is not None and self._due(slot, now) and slot.kill(slot.control.task_id):  # type: ignore[arg-type]
                slot.stopped = True
                stopped.append(slot)
        slots = [slot for slot in slots if slot.kill is None]
        if slots and sys.gettrace() is not None:
            # Under a line tracer (coverage, a debugger) an exception raised into a spinning thread can
            # leave it spinning for good, holding the GIL: cancellation stays cooperative there.
            if not self._tracer_warned:
                self._tracer_warned = True
                self._log.warning("a tracer (coverage, a debugger) runs in this process: OCTOHUB_CANCEL_GRACE "
                                  "hard stops are not raised; cancelled handlers stop when they check the flag")
            return stopped
        for slot in slots:
            if self._due(slot, now):
                slot.stopped = True  # raised once at most, whether or not it could be
                if _raise_in(slot.ident, _HardStop):
                    stopped.append(slot)
        return stopped

    def _due(self, slot: _Slot, now: float) -> bool:
        """Is the slot's hard stop due now (cancelled a grace ago, not stopped yet)?"""
        since = slot.control.cancel_requested_at
        return since is not None and not slot.stopped and now - since >= self._grace

    def _send_quietly(self, frame: str) -> None:
        try:
            self._send(frame)
        except Exception:  # progress is best-effort: it must never fail a task or stop the timers
            self._log.exception("could not send a task_progress frame")

    # -- the live view ---------------------------------------------------------------------------

    def running(self) -> list[dict[str, Any]]:
        """Every task whose handler runs now, the longest-running first.

        Returns:
            One dict per task: task_id, task_type, started (Unix time), elapsed (s), progress
            (None, or fraction, message and at), cancel_requested and cancel_reason.
        """
        now = time.monotonic()
        with self._lock:
            slots = sorted(self._running.values(), key=lambda slot: slot.started_mono)
        return [slot.view(now) for slot in slots]

    def oldest_age(self) -> float:
        """Seconds the longest-running handler has been running; 0 when none runs."""
        now = time.monotonic()
        with self._lock:
            return max((now - slot.started_mono for slot in self._running.values()), default=0.0)
