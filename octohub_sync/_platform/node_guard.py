"""What a node's worker threads started ends when the node dies without stopping (``kill -9``, a crash).

A browser a handler starts on a worker thread is the node's own child; nothing in it notices the
node's death. An isolated child ends its own tree (process_tree.py); this is the same promise
for threads, made only by nodes that register resources (register_resource), at their start:

- Linux: a small watcher process, in a session of its own, holds a pipe from the node. The node
  puts a token in its environment (``OCTOHUB_NODE_TOKEN``), which every process it starts
  inherits. When the pipe ends without the node's goodbye, the watcher waits
  :data:`GRACE` seconds (an isolated child's own teardowns come first), then kills every process
  that still carries the token. Found through ``/proc/<pid>/environ``: Linux only.
- Windows: the node joins a Job Object with ``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE``; the node holds
  the only handle, so its death, however it comes, ends every process of the job.
- Elsewhere (macOS): nothing; the service manager ends the tree (docs/resources.md).

One guard per process, however many nodes it runs: the token and the watcher are shared, released
when the last node stops.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from typing import Any, Optional

__all__ = ["GRACE", "acquire", "release"]

#: Seconds the watcher waits after the node's death before it kills what is left: an isolated
#: child gets its own grace (5 s, _isolation/child.py) to tear down first.
GRACE = 6.0

TOKEN_VARIABLE = "OCTOHUB_NODE_TOKEN"
_BYE = b"bye\n"

_lock = threading.Lock()
_state: dict[str, Any] = {"users": 0, "watcher": None, "job": None}


def acquire() -> None:
    """A node that keeps resources on its threads starts: guard this process's tree (once per process)."""
    with _lock:
        _state["users"] += 1
        if _state["users"] > 1:
            return
        if sys.platform == "win32":
            if _state["job"] is None:  # kept for the process's life: the job ends with the node's last handle
                from .windows import join_new_job
                _state["job"] = join_new_job()
            return
        if not sys.platform.startswith("linux"):
            return
        # A new token, never one inherited: a node started by another guarded node (or by a test process
        # that ran one) must not name its parent's tree, nor its parent its own.
        token = os.environ[TOKEN_VARIABLE] = secrets.token_hex(16)
        _state["watcher"] = subprocess.Popen(
            [sys.executable, "-m", "octohub_sync._platform.node_guard", token], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def release() -> None:
    """A node stopped: the last one says goodbye to the watcher, which then exits without killing."""
    with _lock:
        _state["users"] = max(0, _state["users"] - 1)
        watcher: Optional[subprocess.Popen] = _state["watcher"] if not _state["users"] else None
        if watcher is None:
            return
        _state["watcher"] = None
        os.environ.pop(TOKEN_VARIABLE, None)  # what starts from now on is no guarded node's
    try:
        assert watcher.stdin is not None
        watcher.stdin.write(_BYE)
        watcher.stdin.close()
    except OSError:
        pass  # it is gone already
    try:
        watcher.wait(5)
    except subprocess.TimeoutExpired:
        watcher.kill()
        watcher.wait(5)


def _carriers(token: str) -> list[int]:
    """Every process but this one whose environment holds ``token``."""
    needle = f"{TOKEN_VARIABLE}={token}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            pass  # gone, or not ours to read
    return found


def _watch(token: str) -> None:
    """The watcher process: wait for the node's goodbye or death; after a death, end what it left."""
    heard = sys.stdin.buffer.read()  # until the node closes the pipe, or dies
    if heard.endswith(_BYE):
        return
    time.sleep(GRACE)  # the grace itself: an isolated child tears down and ends its own tree meanwhile
    if sys.platform != "win32":  # only POSIX runs a watcher (Windows: the Job Object ends the tree)
        import signal
        for pid in _carriers(token):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    _watch(sys.argv[1])
