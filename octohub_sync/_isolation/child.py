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
commands pipe means the parent is gone: the child asks its running handler to stop, runs its
resources' teardowns within :data:`PARENT_GONE_GRACE` seconds, and ends its whole process tree
(_platform/process_tree.py), so neither it nor what its handler started is ever an orphan.
Resources (_execution/resources.py) live in the child that made them: made on the main thread, which
runs every task, and torn down there when the node says ``stop`` (the child's end or recycling).
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
from .._execution.resources import Held, ResourceSpec, UsingResources
from .._execution.task_control import TaskControl, activate, deactivate
from .._ops.log_safety import user_frames
from .._platform import process_tree
from .._platform.memory import rss_bytes
from ..exceptions import TaskCancelled

__all__ = ["ChildControl", "resolve", "serve"]

#: Least time between two progress messages to the parent (the node's own interval applies after).
PROGRESS_EVERY = 0.05

#: Seconds a child whose node died gives its handler to return and its resources' teardowns to run.
PARENT_GONE_GRACE = 5.0


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
        self.leaving = threading.Lock()  # taken once, by whoever first learns that the child ends
        self.in_handler = False  # the main thread is inside the handler (a death signal may stop it there)

    def post(self, message: tuple) -> None:
        with self.send_lock:
            self.events.send(message)

    def read(self) -> None:
        """The reader thread: commands in; a cancel goes to the running task at once."""
        while True:
            try:
                message = self.commands.recv()
            except (EOFError, OSError):
                self.parent_gone()  # the parent is gone (or closed our pipe): nothing left to serve
                return
            if message[0] == "stop":
                self.hand_over(message)  # the main thread tears down what it made, then ends the tree
                return
            if message[0] == "cancel":
                control = self.control
                if control is not None and control.task_id == message[1]:
                    control.request_cancel(message[2])
                continue
            self.hand_over(message)

    def hand_over(self, message: tuple) -> None:
        with self.wake:
            self.tasks.append(message)
            self.wake.notify()

    def parent_gone(self) -> None:
        """The node died: stop the task, let the main thread tear down, and end the tree after the grace."""
        if not self.leaving.acquire(blocking=False):
            return  # the pipe's end and the death signal both tell it; once is enough
        control = self.control
        if control is not None:
            control.request_cancel("the node is gone")
        self.hand_over(("stop",))
        # Daemon: it only bounds the wait; the main thread ends the process sooner if it can.
        threading.Thread(target=_end_after, args=(PARENT_GONE_GRACE,), name="octohub-child-grace",
                         daemon=True).start()
        if self.in_handler and threading.current_thread() is not threading.main_thread():
            process_tree.interrupt_main()  # stops a handler blocked in C; its death_signal does the rest

    def death_signal(self) -> None:
        """Linux's parent-death signal, on the main thread: it also stops a handler blocked in C there,
        so that the resources' teardowns run before the grace ends."""
        self.parent_gone()
        if self.in_handler:
            # Once per task: another death signal may come while this TaskCancelled unwinds (the kernel sends
            # one at each reparenting, after the reader's); raised again in run()'s except, out of the handler's
            # try, it would end serve(), and the child, with no teardown run.
            self.in_handler = False
            raise TaskCancelled("the node is gone")

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
            try:  # the death signal raises only in here: the handler's answer below is never cut short
                self.in_handler = True
                if self.leaving.locked():  # the node went just before: no signal would stop a blocked handler
                    raise TaskCancelled("the node is gone")
                outcome: tuple = ("result", self.handler(message))
            finally:
                self.in_handler = False
        except BaseException as exc:  # SystemExit included: the parent answers "failed", the child serves on
            # Its frames as text: a traceback cannot cross to the node, and the node logs it (docs/observability.md).
            outcome = ("error", type(exc).__name__, str(exc), user_frames(exc))
        finally:
            deactivate(token)
            self.control = None
            control.closed = True
        try:
            self.answer(control, outcome)
        except OSError:
            pass  # the node is gone: the reader has queued the "stop" that ends this child

    def answer(self, control: ChildControl, outcome: tuple) -> None:
        control.flush()
        rss = rss_bytes()  # for max_memory_per_child: bytes, or None if unknown
        try:
            self.post(outcome + (rss,))
        except OSError:
            raise
        except Exception as exc:  # the result cannot be pickled
            self.post(("error", "ResultNotSerializable", f"handler returned {type(outcome[1]).__name__}, "
                                                         f"which cannot cross to the node ({exc})", "", rss))


def _end_after(seconds: float) -> None:
    time.sleep(seconds)  # the grace itself, on a thread of its own: nothing to wait for but time
    process_tree.end_own_tree()  # the handler or a teardown did not return in time


def _leave_stopping_to_the_node() -> None:
    """Ignore the signals that ask the node to drain: Ctrl+C (and Ctrl+Break) reach every process of a
    console, systemd's SIGTERM every process of the unit; the node's stop then ends its children itself,
    after their tasks finished. The hard stop and a kill still end a child at once (SIGKILL, TerminateProcess).

    A handler that does nothing, not ``SIG_IGN``: an ignored signal stays ignored across ``exec``, so every
    process a handler starts (chromedriver, a browser) would ignore SIGTERM too, and a teardown's
    ``terminate()`` would not end it; a handler is reset to the default at ``exec``.
    """
    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):  # SIGBREAK: Windows only
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, _drain_signal)


def _drain_signal(signum: int, frame: Any) -> None:
    """The node's to act on, not the child's (see :func:`_leave_stopping_to_the_node`)."""


def serve(commands: Any, events: Any, module: str, qualname: str, resources: tuple = (), middleware: tuple = (),
          log_level: int = logging.WARNING) -> None:
    """The child process: import the handler, say ready, run tasks until told to stop or the parent goes.

    Args:
        resources: (name, module, qualname, max_uses, max_age) of each resource the handler uses.
        middleware: (module, qualname) of each middleware, the outermost first (_execution/middleware.py).
        log_level: the node's root level: records from this level up go to the node's log while a task runs.
    """
    _leave_stopping_to_the_node()  # this is the child process's program: the one place it decides signals
    process_tree.own_tree()  # before the handler can start anything
    try:
        handler = resolve(module, qualname)
        specs = [ResourceSpec(name, resolve(mod, qual), uses, age) for name, mod, qual, uses, age in resources]
        chain = [resolve(*ref) for ref in middleware]
    except BaseException as exc:
        events.send(("broken", f"cannot import the handler {module}.{qualname} in the child: "
                               f"{type(exc).__name__}: {exc}"))
        return
    serving = _Serving(commands, events, handler)
    held = Held(_Counts(serving.post))
    if specs:
        serving.handler = UsingResources(handler, specs, lambda: held)
    serving.handler = compose(chain, serving.handler)  # around the handler and its resources, as on a thread
    # The child's records reach the node's log with the task's fields (log_context.py): its own program's
    # logging, set here once, as the node's program (the CLI) sets the node's.
    log_context.install()
    root = logging.getLogger()
    root.handlers[:] = [log_context.ToParent(serving.post, lambda: serving.control is not None, log_level)]
    root.setLevel(log_level)
    process_tree.watch_parent(serving.death_signal)
    # Daemon: it only reads the parent's pipe, and it ends the process itself when that pipe ends.
    threading.Thread(target=serving.read, name="octohub-child-reader", daemon=True).start()
    serving.post(("ready", os.getpid()))
    while True:
        command = serving.next_task()
        if command[0] == "stop":
            held.close()  # on the thread that made them, as the resources' teardowns expect
            process_tree.end_own_tree()
        _, task_id, task_type, message, task_key = command
        serving.run(task_id, task_type, message, task_key)


class _Counts:
    """The child's resource counts go to the node, which adds them to its own (stats, /metrics)."""

    def __init__(self, post: Callable[[tuple], None]) -> None:
        self._post = post

    def made(self, name: str) -> None:
        self._quietly(("resource", name, 1))

    def torn(self, name: str, count: int = 1) -> None:
        self._quietly(("resource", name, -count))

    def _quietly(self, message: tuple) -> None:
        try:
            self._post(message)
        except OSError:
            pass  # the node is gone: it counts nothing any more
