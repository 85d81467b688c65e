"""The built-in task types every node handles (docs/protocol.md §12)."""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

__all__ = ["BUILTIN_HANDLERS", "TaskHandler", "default", "echo", "sleep"]

#: A task handler receives the whole task message and returns a JSON-serialisable result.
TaskHandler = Callable[[Mapping[str, Any]], Any]

#: Bounds of the ``sleep`` task's ``data.sleep_time`` (seconds).
SLEEP_MIN, SLEEP_MAX = 0.1, 10.0


def echo(task: Mapping[str, Any]) -> Any:
    """Return the task's data and the time it was processed."""
    return {"echo": task.get("data", {}), "processed_at": int(time.time())}


def sleep(task: Mapping[str, Any]) -> str:
    """Sleep ``data.sleep_time`` seconds, clamped to [0.1, 10]."""
    raw = (task.get("data") or {}).get("sleep_time", 1)
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"sleep_time must be a number, got {raw!r}") from None
    seconds = min(SLEEP_MAX, max(SLEEP_MIN, seconds))
    time.sleep(seconds)
    return f"slept {seconds:g} seconds"


def default(task: Mapping[str, Any]) -> str:
    """Say that the task ran with the default handler."""
    return f"task {task.get('task_id')} finished with the default handler"


BUILTIN_HANDLERS: dict[str, TaskHandler] = {"echo": echo, "sleep": sleep, "default": default}
