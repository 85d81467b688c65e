"""What a handler can ask about the task it runs: its id, whether to stop, how to report progress.

Handlers stay plain functions. :func:`current_task` finds the running task through a
context variable that the node sets around each handler call (see handler_calls.py; pool
threads are reused, so it is set and reset every time). Outside a node -- a unit test
calling a handler directly -- it returns an inert control: never cancelled, progress
goes nowhere, so the handler runs as an ordinary call.

Cancellation is cooperative (docs/protocol.md §6): the node only sets a flag, and the
handler decides when to look at it, unless ``OCTOHUB_CANCEL_GRACE`` asks for a hard stop.
"""
from __future__ import annotations

import math
import threading
import time
from contextvars import ContextVar, Token
from typing import Callable, Optional

from .._wire import protocol
from ..exceptions import TaskCancelled

__all__ = ["TaskControl", "activate", "current_task", "deactivate"]

_CURRENT: ContextVar[Optional["TaskControl"]] = ContextVar("octohub_current_task", default=None)

#: The last progress reported: (fraction or None, message or None, Unix time).
Progress = tuple[Optional[float], Optional[str], float]


class TaskControl:
    """One task, as its handler sees it through :func:`current_task` and as the node steers it.

    For handlers: :attr:`task_id`, :attr:`task_type`, :meth:`is_cancelled`, :attr:`cancelled`,
    :meth:`check_cancelled`, :meth:`progress`. The other methods are the node's.

    Attributes:
        task_id: the running task's id (None outside a node).
        task_type: its type (None outside a node).
        task_key: the value of its type's ``key=`` (None without one, or outside a node).
        cancel_reason: why it was cancelled (``"cancelled by the hub: ..."``, ``"timed out after 5 s"``),
            None while it was not.
        last_progress: the last ``(fraction, message, unix_time)`` reported, or None.
    """

    __slots__ = ("task_id", "task_type", "task_key", "attempt", "cancel_reason", "cancel_requested_at", "last_progress", "closed",
                 "_answered", "_event", "_unsent", "_sent_at", "_connected", "_lock")

    def __init__(self, task_id: Optional[str], task_type: Optional[str]) -> None:
        self.task_id = task_id
        self.task_type = task_type
        #: Its key= value (limits.py), None for a type without one: the log records' ``task_key``.
        self.task_key: Optional[object] = None
        #: Which attempt runs (a type with ``retries=``: its progress frames say so), else None.
        self.attempt: Optional[int] = None
        self.cancel_reason: Optional[str] = None
        #: When the cancel flag was set (monotonic), for the grace period of a hard stop.
        self.cancel_requested_at: Optional[float] = None
        self.last_progress: Optional[Progress] = None
        #: The handler returned: later progress() calls are ignored.
        self.closed = False
        self._answered = False  # the hub already has this task's answer (its time limit): no more progress
        self._event: Optional[threading.Event] = None  # made on first use: most handlers never wait on it
        self._unsent = False  # last_progress still has to be sent
        self._sent_at: Optional[float] = None  # monotonic time the last task_progress frame was taken to be sent
        self._connected: Optional[Callable[[], bool]] = None  # set while it runs on a node
        self._lock = threading.Lock()

    # -- for handlers ----------------------------------------------------------------------------

    def is_cancelled(self) -> bool:
        """True once the hub cancelled the task or its time limit passed."""
        return self.cancel_reason is not None

    @property
    def cancelled(self) -> threading.Event:
        """An event set when the task is cancelled: ``cancelled.wait(5)`` is a sleep that a cancel ends."""
        with self._lock:
            if self._event is None:
                self._event = threading.Event()
                if self.cancel_reason is not None:
                    self._event.set()
            return self._event

    def check_cancelled(self) -> None:
        """Return if the task may go on.

        Raises:
            TaskCancelled: the task was cancelled (the message says why); let it propagate,
                and the hub is answered ``failed`` ``TaskCancelled: <why>``.
        """
        reason = self.cancel_reason
        if reason is not None:
            raise TaskCancelled(reason)

    def progress(self, fraction: Optional[float] = None, message: Optional[str] = None) -> None:
        """Report how far the task is; never waits for the network.

        The node sends a ``task_progress`` frame at most once per ``OCTOHUB_PROGRESS_INTERVAL``
        for this task, always the latest value, and the last value before the result. Values
        reported while the node is disconnected are dropped, not queued. Outside a node it
        only checks its arguments.

        Args:
            fraction: done so far, 0 to 1 (values outside are clamped), or None if unknown.
            message: a short text (cut at 200 characters), or None.

        Raises:
            TypeError: ``fraction`` is not a number.
            ValueError: ``fraction`` is NaN.
        """
        fraction = _fraction(fraction)
        text = None if message is None else str(message)[:protocol.MAX_TEXT]
        reported = time.time()
        with self._lock:
            if self.closed:
                return
            self.last_progress = (fraction, text, reported)
            connected = self._connected
            self._unsent = connected is not None and not self._answered and connected()

    # -- for the node ----------------------------------------------------------------------------

    def attach(self, connected: Callable[[], bool]) -> None:
        """The task starts on a node whose connection state ``connected()`` tells."""
        self._connected = connected

    def request_cancel(self, reason: str, *, answered: bool = False) -> bool:
        """Set the cancel flag; the first reason stays.

        Args:
            reason: why, as :class:`TaskCancelled` will say it.
            answered: the hub already has this task's answer (a time limit): stop sending progress.

        Returns:
            True if this call set the flag; False if it was set before or the handler already returned.
        """
        with self._lock:
            if answered:
                self._answered = True
                self._unsent = False
            if self.cancel_reason is not None or self.closed:
                return False
            self.cancel_reason = reason
            self.cancel_requested_at = time.monotonic()
            event = self._event
        if event is not None:
            event.set()
        return True

    @property
    def answered(self) -> bool:
        """The hub already has this task's answer (its time limit passed: TaskTimeout); its handler may run on."""
        return self._answered

    @property
    def has_unsent_progress(self) -> bool:
        """A quick look without the lock: is there a progress value waiting to be sent?"""
        return self._unsent

    def take_progress(self, now: float, interval: float) -> Optional[str]:
        """The ``task_progress`` frame to send now, if a value waits and ``interval`` s passed since the last."""
        with self._lock:
            if not self._unsent or self.closed or (self._sent_at is not None and now - self._sent_at < interval):
                return None
            self._unsent = False
            self._sent_at = now
            last = self.last_progress
        return None if last is None else protocol.task_progress(self.task_id or "", *last, attempt=self.attempt)

    def close(self) -> Optional[str]:
        """The handler returned: no more progress. Returns the last value's frame if it was not sent yet."""
        with self._lock:
            self.closed = True
            if not self._unsent:
                return None
            self._unsent = False
            last = self.last_progress
        return None if last is None else protocol.task_progress(self.task_id or "", *last, attempt=self.attempt)


def current_task() -> TaskControl:
    """The task the calling handler runs, or an inert control outside a node.

    Returns:
        The :class:`TaskControl` of the task running on this thread. Called anywhere else
        (a unit test calling the handler directly, another thread), a fresh control whose
        ``task_id`` is None, that is never cancelled and whose progress goes nowhere.
    """
    control = _CURRENT.get()
    return TaskControl(None, None) if control is None else control


def activate(control: TaskControl) -> Token:
    """Make ``control`` what :func:`current_task` returns on this thread, until :func:`deactivate`."""
    return _CURRENT.set(control)


def deactivate(token: Token) -> None:
    """Undo the :func:`activate` that returned ``token``."""
    _CURRENT.reset(token)


def _fraction(value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"progress fraction must be a number from 0 to 1 or None, not {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float range is far outside 0..1 anyway
        return 1.0 if value > 0 else 0.0
    if math.isnan(value):
        raise ValueError("progress fraction must be a number from 0 to 1 or None, not NaN")
    return min(1.0, max(0.0, value))
