"""The child side of ``isolation="process"``: one spawned interpreter running one task type's handler.

:func:`serve` is the child process's target. It imports the handler by module and
qualified name (as :mod:`pickle` references a function), says ``ready``, then runs
one task at a time as the parent asks. While a handler runs, a reader thread takes the
parent's ``cancel`` into the task's :class:`ChildControl`, so ``current_task()``
works as it does on a node: the flag, ``cancelled.wait()``, ``check_cancelled()`` and
``progress()``, which is forwarded to the parent (at most every :data:`PROGRESS_EVERY`
seconds, the last value always before the result).

A child ignores Ctrl+C, Ctrl+Break and SIGTERM (sent to the whole console or service
with the node): the node drains, then stops its children. Messages are tuples on two one-way pipes (parent -> child: ``commands``; child ->
parent: ``events``); see boundary.py for the parent's half. Reaching the end of the
commands pipe means the parent is gone: the child exits, so it is never an orphan.
This module is imported in every child: it imports little.
"""
from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Optional

from .._execution import log_context
from .._execution.middleware import compose
from .._execution.task_control import TaskControl, activate, deactivate
from .._platform.memory import rss_bytes
from .._ops.log_safety import user_frames

__all__ = ["ChildControl", "resolve", "serve"]

#: Least time between two progress messages to the parent (the node's own interval applies after).
PROGRESS_EVERY = 0.05


def resolve(module: str, qualname: str) -> Callable[..., Any]:
    """The object at ``module.qualname``, as the child imports it (``__main__`` is the parent's script)."""
    target: Any = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


class ChildControl(TaskControl):
    """The task as a handler in the child sees it; its progress goes to the parent."""

    __slots__ = ("_post", "_posted_at", "_pending")

    def __init__(self, task_id: str, task_type: str, post: Callable[[tuple], None]) -> None:
        super().__init__(task_id, task_type)
        self._post = post
        self._posted_at = 0.0
        self._pending = False  # a value not yet posted (rate limit)

    def progress(self, fraction: Optional[float] = None, message: Optional[str] = None) -> None:
        super().progress(fraction, message)  # checks and clamps, as on a node
        now = time.monotonic()
        if now - self._posted_at >= PROGRESS_EVERY:
            self._posted_at = now
            self._pending = False
            self._send_last()
        else:
            self._pending = True

    def flush(self) -> None:
        """Post the last value if the rate limit held it back (before the result)."""
        if self._pending:
            self._pending = False
            self._send_last()

    def _send_last(self) -> None:
        last = self.last_progress
        if last is not None:
            self._post(("progress", last[0], last[1]))


class _Serving:
    """The child's state: the pipes, the handler, the task running now."""

    def __init__(self, commands: Any, events: Any, handler: Callable[..., Any]) -> None:
        self.commands = commands
        self.events = events
        self.handler = handler
        self.send_lock = threading.Lock()  # the handler's progress and the result share the events pipe
        self.control: Optional[ChildControl] = None
        self.tasks: list[tuple] = []  # at most one "run" the reader took while the main thread was busy
        self.wake = threading.Condition()

    def post(self, message: tuple) -> None:
        with self.send_lock:
            self.events.send(message)

    def read(self) -> None:
        """The reader thread: commands in; a cancel goes to the running task at once."""
        while True:
            try:
                message = self.commands.recv()
            except (EOFError, OSError):
                os._exit(0)  # the parent is gone (or closed our pipe): nothing left to serve
            if message[0] == "stop":
                os._exit(0)
            if message[0] == "cancel":
                control = self.control
                if control is not None and control.task_id == message[1]:
                    control.request_cancel(message[2])
                continue
            with self.wake:
                self.tasks.append(message)
                self.wake.notify()

    def next_task(self) -> tuple:
        with self.wake:
            while not self.tasks:
                self.wake.wait()
            return self.tasks.pop(0)

    def run(self, task_id: str, task_type: str, message: Any, task_key: Any = None) -> None:
        control = ChildControl(task_id, task_type, self.post)
        control.task_key = task_key
        control.attach(lambda: True)
        self.control = control
        token = activate(control)
        try:
            result = self.handler(message)
            outcome: tuple = ("result", result)
        except BaseException as exc:  # SystemExit included: the parent answers "failed", the child serves on
            # Its frames as text: a traceback cannot cross to the node, and the node logs it (docs/observability.md).
            outcome = ("error", type(exc).__name__, str(exc), user_frames(exc))
        finally:
            deactivate(token)
            self.control = None
            control.closed = True
        control.flush()
        rss = rss_bytes()  # for max_memory_per_child: bytes, or None if unknown
        try:
            self.post(outcome + (rss,))
        except Exception as exc:  # the result cannot be pickled
            self.post(("error", "ResultNotSerializable", f"handler returned {type(outcome[1]).__name__}, "
                                                         f"which cannot cross to the node ({exc})", "", rss))


def _leave_stopping_to_the_node() -> None:
    """Ignore the signals that ask the node to drain: Ctrl+C (and Ctrl+Break) reach every process of a
    console, systemd's SIGTERM every process of the unit; the node's stop then ends its children itself,
    after their tasks finished. The hard stop and a kill still end a child at once (SIGKILL, TerminateProcess)."""
    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):  # SIGBREAK: Windows only
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, signal.SIG_IGN)


def serve(commands: Any, events: Any, module: str, qualname: str, middleware: tuple = (),
          log_level: int = logging.WARNING) -> None:
    """The child process: import the handler, say ready, run tasks until told to stop or the parent goes.

    Args:
        middleware: (module, qualname) of each middleware, the outermost first (_execution/middleware.py).
        log_level: the node's root level: records from this level up go to the node's log while a task runs.
    """
    _leave_stopping_to_the_node()  # this is the child process's program: the one place it decides signals
    try:
        handler = compose([resolve(*ref) for ref in middleware], resolve(module, qualname))
    except BaseException as exc:
        events.send(("broken", f"cannot import the handler {module}.{qualname} in the child: "
                               f"{type(exc).__name__}: {exc}"))
        return
    serving = _Serving(commands, events, handler)
    # The child's records reach the node's log with the task's fields (log_context.py): its own program's
    # logging, set here once, as the node's program (the CLI) sets the node's.
    log_context.install()
    root = logging.getLogger()
    root.handlers[:] = [log_context.ToParent(serving.post, lambda: serving.control is not None, log_level)]
    root.setLevel(log_level)
    # Daemon: it only reads the parent's pipe, and it ends the process itself when that pipe ends.
    threading.Thread(target=serving.read, name="octohub-child-reader", daemon=True).start()
    serving.post(("ready", os.getpid()))
    while True:
        _, task_id, task_type, message, task_key = serving.next_task()
        serving.run(task_id, task_type, message, task_key)
