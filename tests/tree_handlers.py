"""Handlers and resources that test_process_tree.py runs in child processes (a child imports them by name).

``sleep`` processes stand in for chromedriver and Chrome: what a handler starts and must not outlive it.
$OCTOHUB_TEST_TRACE names a file where each resource's setup and teardown append ``made|torn <pid> <helper>``.
"""
from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from octohub_sync import current_task


def _note(line: str) -> None:
    trace = os.environ.get("OCTOHUB_TEST_TRACE")
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)


def helper() -> Any:
    """A resource: one helper process per child, stopped by the teardown."""
    process = _sleeper()
    _note(f"made {os.getpid()} {process.pid}")
    yield {"child": os.getpid(), "helper": process.pid}
    process.terminate()
    process.wait()
    _note(f"torn {os.getpid()} {process.pid}")


def use_helper(task: dict, helper: dict) -> dict:
    if (task.get("data") or {}).get("block"):
        current_task().progress(0.5, f"pids {helper['child']} {helper['helper']}")
        time.sleep(3600)
    return helper


def spawn(task: dict) -> dict:
    """Start two helpers and leave them running: only the end of the child's tree ends them."""
    pids = [_sleeper().pid for _ in range(2)]
    if (task.get("data") or {}).get("block"):
        current_task().progress(0.5, "pids " + " ".join(map(str, [os.getpid()] + pids)))
        time.sleep(3600)
    return {"child": os.getpid(), "pids": pids}
