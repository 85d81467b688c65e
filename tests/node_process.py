"""A node in its own process, for soak and signal tests: ``python -m tests.node_process [flags]``.

The real program (``octohub_sync.cli.main``: flags, environment, logging, signals)
with extra handlers: ``count``, whose result says how many times this process
ran that task_id (a re-run shows as 2); ``block``, which touches ``data.started_file``
and sleeps ``data.seconds``; ``journal`` and ``journal_once`` (registered with
``retry_interrupted=False``), which append ``<pid> start|end <task_id>`` lines to the
file named by $OCTOHUB_TEST_JOURNAL around a sleep of ``data.seconds``, so that a test
sees which process ran which task, across a kill -9.

$OCTOHUB_TEST_HOSTNAME and $OCTOHUB_TEST_MAC (12 hex digits), read only here, make this
process see another host name or MAC (``socket.gethostname``, ``uuid.getnode``): a renamed
or cloned machine, for the pc_id tests. The node has no such setting.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
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


def journal(task: dict) -> dict:
    line = f"{os.getpid()} %s {task['task_id']}\n"
    path = os.environ["OCTOHUB_TEST_JOURNAL"]
    with open(path, "a") as out:  # O_APPEND: lines of concurrent writers do not interleave
        out.write(line % "start")
    time.sleep(float(task["data"].get("seconds", 0)))
    with open(path, "a") as out:
        out.write(line % "end")
    return {"pid": os.getpid()}


def pretend_machine() -> None:
    """Another host name and MAC for this process, if the test asks for them."""
    hostname, mac = os.environ.get("OCTOHUB_TEST_HOSTNAME"), os.environ.get("OCTOHUB_TEST_MAC")
    if hostname:
        socket.gethostname = lambda: hostname
    if mac:
        uuid.getnode = lambda: int(mac, 16)


def setup(client: Any) -> None:
    client.register_task_handler("count", count)
    client.register_task_handler("block", block)
    client.register_task_handler("journal", journal)
    client.register_task_handler("journal_once", journal, retry_interrupted=False)


if __name__ == "__main__":
    pretend_machine()
    sys.exit(main(setup=setup))
