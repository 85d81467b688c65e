"""A handler's outcome as the hub's answer: its result frame, or its error, logged once (docs/observability.md).

The runner (runner.py) calls :meth:`Answers.outcome` on the worker thread after each attempt; a
type with ``retries=`` gets the ``attempts`` field on its one result (docs/protocol.md), and its
last error says how many attempts were made.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from .._ops.log_safety import TRACEBACK, format_traceback
from .._wire import protocol
from ..exceptions import TaskCancelled

__all__ = ["Answers", "LOGGED_ERROR_CHARS"]

#: A handler's error is logged cut to this many characters (the hub gets up to protocol.MAX_FAILED_BYTES).
LOGGED_ERROR_CHARS = 500


class Answers:
    """Builds result frames within OCTOHUB_MAX_RESULT_BYTES and logs failures per OCTOHUB_LOG_TASK_ERRORS."""

    def __init__(self, *, max_result_bytes: int, log_errors: str, log: logging.LoggerAdapter) -> None:
        self._max_result_bytes = max_result_bytes
        self._log_error_text = log_errors == "text"  # else the exception's type only
        self._log = log

    def failed(self, tid: str, error: str, attempts: Optional[int] = None) -> str:
        """A ``failed`` result whose frame fits OCTOHUB_MAX_RESULT_BYTES (a long error is cut)."""
        return protocol.task_failed(tid, error, max_bytes=self._max_result_bytes, attempts=attempts)

    def error(self, tid: str, task_type: str, exc: BaseException, attempts: Optional[int] = None) -> str:
        """The ``failed`` frame for a handler's exception, its line logged; ``(after N attempts)`` after retries."""
        error = self.text(exc, attempts)
        self.log_failure(tid, task_type, exc, error)
        return self.failed(tid, error, attempts)

    @staticmethod
    def text(exc: BaseException, attempts: Optional[int] = None) -> str:
        """``Type: message``, and ``(after N attempts)`` when retries made more than one."""
        error = f"{type(exc).__name__}: {exc}"
        return f"{error} (after {attempts} attempts)" if attempts is not None and attempts > 1 else error

    def retrying(self, tid: str, task_type: str, exc: BaseException, attempt: int, delay: float) -> str:
        """The INFO line of an attempt that gets another; returns the answer to give should the wait not
        happen after all (a cancel, the time limit or the stop came meanwhile)."""
        self._log.info("task %s (%s) attempt %d failed: %s; attempt %d in %.2f s", tid, task_type, attempt,
                       self.shown(exc, f"{type(exc).__name__}: {exc}"), attempt + 1, delay)
        return self.failed(tid, self.text(exc, attempt), attempt)

    def result(self, tid: str, task_type: str, result: Any, attempts: Optional[int] = None) -> tuple[str, bool]:
        """``(frame, ok)`` for a handler's return value: ``completed``, or ``failed`` if it cannot be sent."""
        try:
            frame = protocol.task_completed(tid, result, attempts=attempts)
        except (TypeError, ValueError, RecursionError) as exc:
            error = f"ResultNotSerializable: handler returned {type(result).__name__}, not JSON ({exc})"
            self._log.warning("task %s (%s): %s", tid, task_type, error)
            return self.failed(tid, error, attempts), False
        size = protocol.frame_size(frame) if self._max_result_bytes else 0
        if size > self._max_result_bytes:
            # A hub that enforces its message size limit resets the connection on a larger frame,
            # and the result would be lost on every attempt.
            error = f"ResultTooLarge: {size} bytes (limit {self._max_result_bytes}, OCTOHUB_MAX_RESULT_BYTES)"
            self._log.warning("task %s (%s): %s", tid, task_type, error)
            return self.failed(tid, error, attempts), False
        return frame, True

    def log_failure(self, tid: str, task_type: str, exc: BaseException, error: str) -> None:
        """The ``failed`` line: WARNING with the handler's traceback below it, once (docs/observability.md);
        INFO without one for a cancel (TaskCancelled: asked for, not a fault)."""
        # Cut: an exception quoting a whole HTML page is no log line. OCTOHUB_LOG_TASK_ERRORS=type: its text
        # may hold personal data or secrets (a login, a query), so its type only, in the traceback too.
        shown = self.shown(exc, error)
        if isinstance(exc, TaskCancelled):
            self._log.info("task %s (%s) failed: %s", tid, task_type, shown)
            return
        if not self._log.isEnabledFor(logging.WARNING):
            return  # the traceback is formatted only for a line that is written
        trace = format_traceback(exc, with_text=self._log_error_text, max_chars=LOGGED_ERROR_CHARS)
        self._log.warning("task %s (%s) failed: %s", tid, task_type, shown, extra={TRACEBACK: trace})

    def shown(self, exc: BaseException, error: str) -> str:
        """What a log line may show of an error (OCTOHUB_LOG_TASK_ERRORS)."""
        return protocol.cut_text(error, LOGGED_ERROR_CHARS) if self._log_error_text else type(exc).__name__
