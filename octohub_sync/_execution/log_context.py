"""The task on every log record: ``task_id``, ``task_type`` and ``task_key`` (docs/observability.md).

A log record factory, as OpenTelemetry's logging instrumentation adds its trace ids, not a
filter or a formatter (Celery's ``TaskFormatter``): a filter or a formatter acts only where it is
installed, while a factory makes every record of every logger, so a user's own handler and format
(``%(task_id)s``) see the fields too. The factory reads the task that :func:`current_task` returns
(one context variable, set around each task: task_control.py); outside a task the fields are
:data:`NO_TASK`, so such a format never fails. Nothing is done per task beyond that variable: the
cost is one lookup per record that is actually made.

In an isolated child the same factory runs; :class:`ToParent` sends its records to the node,
where :func:`replay` hands each to the logger of the same name.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from .task_control import _CURRENT

__all__ = ["NO_TASK", "ToParent", "install", "replay"]

#: What a record made outside a task carries in each field.
NO_TASK = "-"

_lock = threading.Lock()
_installed: list[Callable[..., logging.LogRecord]] = []  # the factory we installed, once per process


def install() -> None:
    """Make every record of this process carry the task fields (calling it again changes nothing).

    The factory in place before (another library's) still makes the record: ours only adds fields.
    """
    with _lock:
        if _installed and logging.getLogRecordFactory() is _installed[0]:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            control = _CURRENT.get()
            if control is None:
                record.task_id = record.task_type = record.task_key = NO_TASK
            else:
                record.task_id, record.task_type = control.task_id or NO_TASK, control.task_type or NO_TASK
                key = control.task_key
                record.task_key = NO_TASK if key is None else str(key)
            return record

        logging.setLogRecordFactory(factory)
        _installed[:] = [factory]


#: The record attributes that cross from a child to the node (the message already formatted).
_CROSSING = ("name", "levelno", "levelname", "pathname", "filename", "module", "lineno", "funcName", "created",
             "msecs", "relativeCreated", "thread", "threadName", "process", "processName",
             "task_id", "task_type", "task_key")


class ToParent(logging.Handler):
    """In an isolated child: each record as a dict to ``post`` (the events pipe), while ``active()``."""

    def __init__(self, post: Callable[[tuple], None], active: Callable[[], bool], level: int) -> None:
        super().__init__(level)
        self._post = post
        self._active = active

    def emit(self, record: logging.LogRecord) -> None:
        if not self._active():  # between tasks no one reads the pipe: the child must not block on it
            return
        try:
            fields = {name: getattr(record, name, None) for name in _CROSSING}
            fields["msg"] = record.getMessage()
            if record.exc_info:
                fields["exc_text"] = logging.Formatter().formatException(record.exc_info)
            elif record.exc_text:
                fields["exc_text"] = record.exc_text
            self._post(("log", fields))
        except Exception:  # a record that cannot be sent is lost, never the task
            self.handleError(record)


def replay(fields: dict) -> None:
    """On the node: a child's record, handled by the logger of its name (with the node's handlers)."""
    record = logging.makeLogRecord(fields)
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)

