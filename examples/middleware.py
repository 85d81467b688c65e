"""Middleware that times every task and tags failures: ``octohub-node --app examples.middleware``.

Each task's time goes to the log (with the task id on the line: docs/observability.md); a failure is
re-raised with its task type in front, so the hub's error says which handler failed. ``flaky`` retries
a connection blip on the node (docs/retries.md).
"""
from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

from octohub_sync import Handlers

log = logging.getLogger(__name__)
handlers = Handlers()


class TaggedError(Exception):
    """A handler's exception with its task type in front."""


@handlers.middleware
def timed(task: dict, call_next: Callable[[], Any]) -> Any:
    """Outermost: the whole call, the other middleware included."""
    started = time.monotonic()
    try:
        return call_next()
    finally:
        log.info("%s took %.3f s", task.get("task_type"), time.monotonic() - started)


@handlers.middleware
def tag_failures(task: dict, call_next: Callable[[], Any]) -> Any:
    try:
        return call_next()
    except TaggedError:
        raise
    except Exception as exc:
        raise TaggedError(f"{task.get('task_type')}: {type(exc).__name__}: {exc}") from exc


@handlers.task("add")
def add(task: dict) -> int:
    data = task["data"]
    return int(data["a"]) + int(data["b"])


@handlers.task("flaky", retries=3, retry_on=ConnectionError, retry_backoff=0.5)
def flaky(task: dict) -> str:
    if random.random() < 0.5:
        raise ConnectionError("the site reset the connection")
    return "done"
