"""``isolation="process"``: a task type's handler runs in spawned child processes.

The parts: this module decides what may cross (a handler found again by module and
name) and how a child's end and errors read; pool.py holds the parent's pool
(:class:`~octohub_sync._isolation.pool.IsolatedHandler`); child.py is the child's loop.

Why a pool of our own, not ``concurrent.futures.ProcessPoolExecutor``: the executor
cannot kill the child of one task, and a dead child breaks the whole pool
(``BrokenProcessPool``) without saying which child died of what; ``max_tasks_per_child``
needs Python 3.11.

Only the ``spawn`` start method is used, on every platform: a fresh interpreter that
imports the handler by module and name. On POSIX, CPython starts it with
``_posixsubprocess.fork_exec`` (multiprocessing/popen_spawn_posix.py, through
util.spawnv_passfds): the forked process runs no Python before it execs, so the node's
threads (and the locks they hold) never reach a child; ``fork`` and ``forkserver`` are
never used.
"""
from __future__ import annotations

import signal
import sys
from typing import Any, Callable, Optional

from .child import resolve

__all__ = ["check_importable", "describe_exit", "remote_error"]

# Windows exit codes that mean a crash (NTSTATUS), named as POSIX signals are.
_WINDOWS_STATUS = {0xC0000005: "access violation", 0xC00000FD: "stack overflow",
                   0xC0000409: "stack buffer overrun", 0xC000001D: "illegal instruction",
                   0xC0000094: "integer divide by zero", 0xC0000374: "heap corruption"}


def describe_exit(exitcode: Optional[int]) -> str:
    """How a child ended: ``exited with code 3``, ``killed by signal SIGSEGV (11)``."""
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:  # POSIX: multiprocessing reports death by signal N as -N
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "signal"
        return f"killed by signal {name} ({-exitcode})"
    status = exitcode & 0xFFFFFFFF  # Windows: an NTSTATUS such as 0xC0000005, the access violation
    if status in _WINDOWS_STATUS:
        return f"exited with code 0x{status:08X} ({_WINDOWS_STATUS[status]})"
    return f"exited with code {exitcode}"


def check_importable(task_type: str, handler: Callable[..., Any], what: str = "handler") -> tuple[str, str]:
    """The (module, qualname) a child imports ``handler`` (or a resource's factory: ``what``) by.

    Raises:
        ValueError: the handler cannot be found again by module and name in a fresh interpreter
            (a lambda, a closure, a method of an instance, an interactive ``__main__``).
    """
    module = getattr(handler, "__module__", None)
    qualname = getattr(handler, "__qualname__", None)

    def refuse(why: str) -> ValueError:
        return ValueError(f"task type {task_type!r} with isolation='process': the {what} {why}; a child process "
                          "imports it by module and name, so define it with def at the top level of a module")

    if not module or not qualname:
        raise refuse(f"{handler!r} has no module or qualified name")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise refuse(f"{module}.{qualname} is a lambda or is defined inside a function")
    if module == "__main__" and not getattr(sys.modules.get("__main__"), "__file__", None):
        raise refuse("is defined in an interactive __main__, which a child cannot import")
    try:
        found = resolve(module, qualname)
    except Exception:
        raise refuse(f"is not found as {module}.{qualname}") from None
    if found is not handler:
        raise refuse(f"is not the object found as {module}.{qualname}")
    return module, qualname


_ERRORS: dict[str, type] = {}


def remote_error(name: str, text: str, frames: str = "") -> Exception:
    """An exception whose type name is the child's, so the hub reads ``KeyError: ...`` as from a thread.

    ``frames``, the child's traceback as text, rides as ``child_traceback``: the node logs it as its own.
    """
    cls = _ERRORS.get(name)
    if cls is None:
        cls = _ERRORS.setdefault(name, type(name, (Exception,), {"__module__": "octohub_sync._isolation.child"}))
    error = cls(text)
    error.child_traceback = frames
    return error
