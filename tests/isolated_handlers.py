"""Handlers that test_isolation.py runs in child processes: a child imports them by module and name."""
from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
from typing import Any

from octohub_sync import current_task


def whoami(task: dict) -> dict:
    """The child's pid and the task id it sees."""
    return {"pid": os.getpid(), "task_id": current_task().task_id, "data": task.get("data")}


def segfault(task: dict) -> None:
    """A real crash: SIGSEGV on POSIX; on Windows an access violation (ctypes.string_at(0) would not do:
    ctypes on Windows turns an access violation into OSError)."""
    if sys.platform == "win32":
        faulthandler._sigsegv()  # type: ignore[attr-defined]
    os.kill(os.getpid(), signal.SIGSEGV)


def exit3(task: dict) -> None:
    """Leave without cleanup, as a C library calling exit() does."""
    os._exit(3)


def fail(task: dict) -> None:
    raise KeyError(task["data"]["missing"])


def pid_then_block(task: dict) -> None:
    """Say its pid as progress, then block in C until killed."""
    current_task().progress(0.5, f"pid {os.getpid()}")
    time.sleep(3600)


def sleep_forever(task: dict) -> None:
    """Blocked in one C call: no thread-level stop reaches it."""
    time.sleep(3600)


def until_cancelled(task: dict) -> dict:
    """Waits for the cancel flag, reports it, and checks it."""
    control = current_task()
    control.progress(0.25, "waiting")
    seen = control.cancelled.wait(20)
    control.progress(1.0, f"saw cancel: {seen}, {control.is_cancelled()}")
    control.check_cancelled()
    return {"seen": seen}


def progress_steps(task: dict) -> str:
    control = current_task()
    for step in range(1, 4):
        control.progress(step / 4, f"step {step}")
        time.sleep(0.06)  # longer than the child's own rate limit, so each step crosses
    return "done"


#: Kept alive in the child so that its resident memory stays high after the task.
_BALLAST: list[bytes] = []


def allocate(task: dict) -> dict:
    """Grow by data.mb megabytes (touched, so they are resident) and keep them."""
    _BALLAST.append(b"x" * (int(task["data"]["mb"]) * 1024 * 1024))
    return {"pid": os.getpid()}


def unpicklable(task: dict) -> Any:
    return lambda: None


def pid_then_nap(task: dict) -> dict:
    """Say its pid as progress, then work for a moment and answer."""
    current_task().progress(0.5, f"pid {os.getpid()}")
    deadline = time.monotonic() + float(task["data"]["seconds"])
    while time.monotonic() < deadline:
        time.sleep(0.01)  # short sleeps: a signal that was not ignored would end the process here
    return {"pid": os.getpid()}
