"""A node in its own process, for soak and signal tests: ``python -m tests.node_process [flags]``.

The real program (``octohub_sync.cli.main``: flags, environment, logging, signals)
with two extra handlers: ``count``, whose result says how many times this process
ran that task_id (a re-run shows as 2), and ``block``, which touches ``data.started_file``
and sleeps ``data.seconds``.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from octohub_sync.cli import main

runs: Counter = Counter()
lock = threading.Lock()


def count(task: dict) -> dict:
    with lock:
        runs[task["task_id"]] += 1
        return {"runs": runs[task["task_id"]]}


def block(task: dict) -> str:
    marker = task["data"].get("started_file")
    if marker:  # tells the test that the task is running before it sends a signal
        Path(marker).touch()
    time.sleep(float(task["data"]["seconds"]))
    return "unblocked"


def setup(client: Any) -> None:
    client.register_task_handler("count", count)
    client.register_task_handler("block", block)


if __name__ == "__main__":
    sys.exit(main(setup=setup))
