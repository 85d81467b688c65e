"""The program's log lines (``OCTOHUB_LOG_FORMAT``): text with the task id, or one JSON object per line.

Both read the task fields that every record carries while a handler runs (_execution/log_context.py)
and fall back to none for a record made before those fields existed (another process's factory).
Secrets are masked before either formats: the program's handler carries the SafeLogFilter (log_safety.py).
"""
from __future__ import annotations

import json
import logging
from typing import Optional

__all__ = ["JsonFormatter", "TEXT_FORMAT", "TextFormatter", "formatter"]

#: The default line: the task id in brackets after the level, on the lines logged while a task runs.
TEXT_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(task)s%(message)s"

_NONE = "-"  # log_context.NO_TASK: what a record made outside a task carries


class TextFormatter(logging.Formatter):
    """``time - logger - LEVEL - [task-1] message``; without the brackets outside a task."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        task_id = getattr(record, "task_id", _NONE)
        record.task = "" if task_id == _NONE else f"[{task_id}] "
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pc_id, task_id, task_type, task_key, exception.

    Args:
        pc_id: the node's id, for the records that do not carry one (set when the node is made).
    """

    def __init__(self, pc_id: Optional[str] = None) -> None:
        super().__init__()
        self.pc_id = pc_id

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
                "level": record.levelname, "logger": record.name, "message": record.getMessage(),
                "pc_id": getattr(record, "pc_id", self.pc_id)}
        for name in ("task_id", "task_type", "task_key"):
            value = getattr(record, name, _NONE)
            line[name] = None if value == _NONE else value
        exception = record.exc_text or (self.formatException(record.exc_info) if record.exc_info else None)
        trace = getattr(record, "octohub_traceback", None)  # log_safety.TRACEBACK: a failed task's frames
        if exception or trace:
            line["exception"] = exception or trace
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(kind: str) -> logging.Formatter:
    """The formatter for ``OCTOHUB_LOG_FORMAT`` ``kind`` (``text`` or ``json``)."""
    return JsonFormatter() if kind == "json" else TextFormatter()
