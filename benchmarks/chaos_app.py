"""The handler benchmarks/chaos.py serves in its node (``--app benchmarks.chaos_app``).

``chaos`` writes ``<pid> start <task_id>`` to the journal named by $CHAOS_JOURNAL, sleeps
``data.seconds`` (default 0.02), writes ``<pid> end <task_id>`` and returns ``{"pid": <pid>}``.
Each line is one ``os.write`` to a file opened with O_APPEND: it is in the operating system's
hands at once (a kill -9 cannot lose it) and lines of concurrent workers never interleave.
"""
from __future__ import annotations

import os
import time
from typing import Any, Mapping

from octohub_sync import Handlers

handlers = Handlers()
_journal = os.open(os.environ.get("CHAOS_JOURNAL", "chaos-journal.txt"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def _write(line: str) -> None:
    os.write(_journal, line.encode())


@handlers.task("chaos")
def chaos(task: Mapping[str, Any]) -> dict:
    pid, task_id = os.getpid(), task["task_id"]
    _write(f"{pid} start {task_id}\n")
    time.sleep(float(task["data"].get("seconds", 0.02)))
    _write(f"{pid} end {task_id}\n")
    return {"pid": pid}
