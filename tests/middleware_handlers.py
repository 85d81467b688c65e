"""Handlers and middleware that test_middleware.py and test_log_context.py run, in child processes too:
a child imports them by module and name."""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable

from octohub_sync import current_task

log = logging.getLogger("user.tasks")


def tag_outer(task: dict, call_next: Callable[[], Any]) -> Any:
    """Outermost: sees what the inner one made of the result, and turns a KeyError into a result."""
    try:
        result = call_next()
    except KeyError as exc:
        return {"rescued": str(exc), "mw_pid": os.getpid()}
    return {**result, "order": ["outer"] + result.get("order", [])}


def tag_inner(task: dict, call_next: Callable[[], Any]) -> Any:
    control = current_task()
    control.progress(0.5, "from the middleware")
    seen = {"task_id": control.task_id, "thread": threading.get_ident(), "pid": os.getpid()}
    if task["data"].get("mw_raises"):
        raise RuntimeError("the middleware refuses")
    result = call_next()
    return {**result, "order": ["inner"], "mw": seen}


def handler(task: dict) -> dict:
    if task["data"].get("fail"):
        raise KeyError("missing")
    return {"thread": threading.get_ident(), "pid": os.getpid()}


def waits_for_cancel(task: dict, call_next: Callable[[], Any]) -> Any:
    """Blocks in the middleware until the task is cancelled (or its time limit), then says so."""
    control = current_task()
    if task["data"].get("wait_in_middleware"):
        control.progress(0.1, "waiting in the middleware")
        control.cancelled.wait(30)
        control.check_cancelled()
    return call_next()


def logs(task: dict) -> dict:
    """Logs on a logger of its own, as a user's handler does."""
    log.warning("working on %s", task["data"].get("what"))
    return {"pid": os.getpid()}


def flaky(task: dict) -> dict:
    """Each attempt writes a line to data["log"]; raises data["raise"] (ConnectionError by default) until
    attempt data["succeed_on"] (never without it). Reports progress first."""
    data = task["data"]
    with open(data["log"], "a") as out:
        out.write(f"{time_now()}\n")
    with open(data["log"]) as seen:
        attempt = len(seen.readlines())
    current_task().progress(0.1, f"attempt {attempt}")
    if attempt >= data.get("succeed_on", 10**9):
        return {"attempt": attempt, "pid": os.getpid()}
    kind = {"ConnectionError": ConnectionError, "KeyError": KeyError}[data.get("raise", "ConnectionError")]
    raise kind(f"blip {attempt}")


def time_now() -> float:
    import time
    return time.monotonic()
