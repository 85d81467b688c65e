"""A child process's whole tree ends with it: what an isolated child does at start, and how its tree is killed.

A handler's own processes (chromedriver, and the Chrome processes it starts) are not ours to track
one by one: the child puts itself, and so everything it starts, in one unit the OS kills as one.

- POSIX: the child makes a session of its own (``os.setsid``): it leads a process group that its
  descendants inherit, and ``killpg(child_pid, SIGKILL)`` ends them all, even while the child is
  blocked in C. A descendant that makes a session of its own leaves the group (few do; Chrome does not).
- Windows: the child makes a Job Object with ``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`` and joins it; its
  descendants join at birth. The child holds the only handle, so however the child ends (its own exit,
  ``TerminateProcess`` from the node), the OS closes the handle and ends the whole job.
- The same Job Object guards a node's own tree on Windows (node_guard.py; the binding is windows.py's
  :func:`join_new_job`).
- Linux: the child also asks for a signal when its parent dies (``PR_SET_PDEATHSIG``). That signal
  comes when the *thread* that started the child ends, too, so the handler checks that the parent
  process really is gone (``os.getppid()`` changed) before it acts. The kernel may hand that signal
  to any thread of the child, so the child's pipe reader sends it again to the main thread
  (:func:`interrupt_main`), the one a Python signal handler runs on.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable

__all__ = ["end_own_tree", "interrupt_main", "kill_tree", "own_tree", "watch_parent"]

#: This process's unit: a process group it leads, or a job handle; and whether its parent is watched.
_state: dict[str, Any] = {"leader": False, "job": None}

def own_tree() -> None:
    """In a new child: make this process and all it will start one unit that is killed as one."""
    if sys.platform == "win32":
        from .windows import join_new_job
        _state["job"] = join_new_job()
        return
    try:
        os.setsid()
        _state["leader"] = True
    except OSError:  # already a group leader (not as the node starts its children): keep the node's group
        _state["leader"] = False


def end_own_tree() -> None:
    """End this process and every process of its unit, now (no Python cleanup runs)."""
    if sys.platform != "win32" and _state["leader"]:
        os.killpg(os.getpgrp(), signal.SIGKILL)  # this process too: SIGKILL to the group it leads
    os._exit(0)  # Windows: the job's only handle closes with us, and the job ends the rest


def kill_tree(pid: int, kill: Callable[[], None]) -> None:
    """From the node: kill child ``pid``'s whole unit; ``kill`` kills the child itself (always called).

    On POSIX a group whose id is the child's pid exists only if the child made it (:func:`own_tree`).
    """
    if sys.platform != "win32" and pid > 0:  # never 0: that would be the node's own group
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # it has not made its group yet (so it started nothing), or it is gone with its group
    kill()  # Windows: TerminateProcess; the job ends with the child's handle to it


def watch_parent(on_gone: Callable[[], None]) -> None:
    """POSIX: call ``on_gone`` on the main thread, as a signal handler, once the parent process is dead.

    The signal is SIGUSR1: on Linux the kernel sends it when the parent dies (``PR_SET_PDEATHSIG``);
    everywhere :func:`interrupt_main` sends it, for the thread that read the end of the parent's pipe,
    which works on every platform. A signal handler, because only a signal stops a main thread that
    is blocked in C (``time.sleep``, a socket read).
    """
    if sys.platform == "win32":
        return
    parent = os.getppid()

    def gone(signum: int, frame: Any) -> None:
        # Not merely the end of the parent's thread that started us: the parent process is gone (the
        # pipe's reader said so; it may read the end before the kernel gives us a new parent).
        if _state.get("parent_gone") or os.getppid() != parent:
            on_gone()

    signal.signal(signal.SIGUSR1, gone)
    _state["watching"] = True
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGUSR1), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the pipe's end still tells
    if os.getppid() != parent:  # it died before the request took hold
        on_gone()


def interrupt_main() -> None:
    """Run :func:`watch_parent`'s handler on the main thread now (the kernel may deliver a signal
    to any thread of the process: this one goes to the main thread)."""
    if sys.platform != "win32" and _state.get("watching"):
        import threading
        _state["parent_gone"] = True
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
