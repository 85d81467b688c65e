"""A module of handlers is a node: ``octohub-node --app examples.tasks`` serves these.

Run it from the repository root (the module is imported from the working directory, as
``python -m`` would), with every flag, ``.env`` setting, log line and signal of the program:

    octohub-node --app examples.tasks --env-file .env

Each handler is a plain function: a test calls it directly, or runs it through a real local
hub with the pytest plugin (README, "Testing your handlers"). The ``Handlers`` registry only
records which task type each one answers; ``--app examples.custom_client`` shows the other
way, a ``setup(client)`` function.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping

from octohub_sync import Handlers

logger = logging.getLogger(__name__)

handlers = Handlers()


@handlers.task("reverse")
def reverse(task: Mapping[str, Any]) -> str:
    """Reverse ``data.text``."""
    return task["data"]["text"][::-1]


@handlers.task
def word_count(task: Mapping[str, Any]) -> dict:
    """Count the words of ``data.text`` (the task type is the function's name, ``word_count``)."""
    words = re.findall(r"\w+", task["data"]["text"].lower())
    return {"words": len(words), "distinct": len(set(words))}


@handlers.message("notification")
def notification(message: Mapping[str, Any]) -> None:
    """Hub messages of kind ``notification``."""
    logger.info("notification from the hub: %s", message.get("notification"))
