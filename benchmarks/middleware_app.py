"""Middleware on the echo path (``compare.py --app .=middleware_app``): what middleware and the log
context cost a task when they are in use.

Two middlewares around every handler, the built-in ``echo`` included; each reads the task's log fields
the way a user's format would (a record made per task would measure logging, not the context).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)


def outer(task: Mapping[str, Any], call_next: Callable[[], Any]) -> Any:
    return call_next()


def inner(task: Mapping[str, Any], call_next: Callable[[], Any]) -> Any:
    log.debug("task %s", task.get("task_id"))  # below the level: no record, as most lines in production
    return call_next()


def noop(task: Mapping[str, Any]) -> None:
    return None


def setup(client: Any) -> None:
    client.add_middleware(outer)
    client.add_middleware(inner)
    client.register_task_handler("noop", noop)
