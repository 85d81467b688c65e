"""Handlers and resources that test_process_tree.py runs in child processes (a child imports them by name).

``sleep`` processes stand in for chromedriver and Chrome: what a handler starts and must not outlive it.
$OCTOHUB_TEST_TRACE names a file where each resource's setup and teardown append ``made|torn <pid> <helper>``.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

from octohub_sync import TaskCancelled, current_task


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


class _DeathSignalAgain(Exception):
    """Its text brings the child's death signal (SIGUSR1) again, on the main thread: the child reads that text
    while it turns the handler's failure into its answer, the moment the kernel's next parent-death signal
    may come (it sends one at each reparenting, after the one the child's pipe reader sent)."""

    def __str__(self) -> str:
        signal.raise_signal(signal.SIGUSR1)  # its handler runs before this returns
        return "the node is gone, and its death signal came again"


def _block_until_the_node_is_gone() -> None:
    try:
        time.sleep(3600)
    except TaskCancelled:  # the first death signal stopped the sleep
        raise _DeathSignalAgain() from None


def use_helper_signalled_twice(task: dict, helper: dict) -> None:
    """Like :func:`use_helper` blocked, but its child gets a second death signal while it answers."""
    current_task().progress(0.5, f"pids {helper['child']} {helper['helper']}")
    _block_until_the_node_is_gone()


def spawn_signalled_twice(task: dict) -> None:
    """Like :func:`spawn` blocked, but its child gets a second death signal while it answers."""
    pids = [_sleeper().pid for _ in range(2)]
    current_task().progress(0.5, "pids " + " ".join(map(str, [os.getpid()] + pids)))
    _block_until_the_node_is_gone()
