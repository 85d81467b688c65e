"""Handlers benchmarks/isolation.py loads into a node (``OCTOHUB_APP=isolation_app``).

``echo`` is the built-in echo handler, registered again with ``isolation="process"``;
``nap`` reports that it started, then blocks in one C call for an hour.
"""
from __future__ import annotations

import os
import time
from typing import Any, Mapping

from octohub_sync import current_task
from octohub_sync._execution.builtin_tasks import echo


def nap(task: Mapping[str, Any]) -> None:
    current_task().progress(0.0, f"started in {os.getpid()}")
    time.sleep(3600)


def setup(client: Any) -> None:
    client.register_task_handler("echo", echo, isolation="process")
    client.register_task_handler("nap", nap, isolation="process")
