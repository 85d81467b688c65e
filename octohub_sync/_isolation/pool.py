"""The parent's half of ``isolation="process"`` (boundary.py): :class:`IsolatedHandler` and its children.

:class:`IsolatedHandler` is what the runner calls instead of the handler: a callable
``task -> result`` that blocks its worker thread while a child (child.py) runs the task,
so time limits, cancel, progress, the ledger and delivery work as for any handler. Its
children start lazily, one per worker thread that runs the type at once (so never more
than the type's concurrency, which the runner enforces before the call), and are
replaced after ``max_tasks_per_child`` tasks, above ``max_memory_per_child`` MB, after
a crash, or after a hard stop killed one (_execution/handler_calls.py calls :meth:`IsolatedHandler.kill`).

Why one module: a child's whole life as the parent sees it (start, task, cancel, kill, replace,
stop) shares one lock and one child record; split, each half would reach into the other's state.
"""
from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional

from .._execution.handler_calls import HardStop
from .._execution.log_context import replay
from .._execution.options import TaskOptions
from .._execution.resources import ResourceRegistry, ResourceSpec, Tally, UsingResources
from .._execution.task_control import TaskControl, current_task
from .._platform.process_tree import kill_tree
from ..exceptions import WorkerCrashed
from .boundary import check_importable, describe_exit, remote_error
from .child import serve

__all__ = ["IsolatedHandler", "isolate", "isolation_view", "stop_children"]

logger = logging.getLogger(__name__)

# Only spawn, on every platform: see boundary.py for why it never forks the node's threads.
_SPAWN = multiprocessing.get_context("spawn")

#: How often a waiting worker looks at its task's cancel flag to pass it on to the child.
CANCEL_POLL = 0.05

#: Seconds a new child may take to import the handler and say it is ready.
START_TIMEOUT = 60.0

#: Seconds a child is given to exit after "stop" (its resources' teardowns included) before it is killed.
STOP_TIMEOUT = 5.0


class _Child:
    """One child process and the parent's ends of its pipes."""

    __slots__ = ("process", "commands", "events", "pid", "tasks", "task_id", "killed", "stopping", "live", "tally")

    def __init__(self, module: str, qualname: str, task_type: str, resources: tuple, tally: Tally,
                 middleware: tuple = ()) -> None:
        child_commands, self.commands = _SPAWN.Pipe(duplex=False)
        self.events, child_events = _SPAWN.Pipe(duplex=False)
        # Daemon: if the node's process exits without stop(), multiprocessing ends the child too.
        self.process = _SPAWN.Process(target=serve, args=(child_commands, child_events, module, qualname, resources,
                                                          middleware, logging.getLogger().getEffectiveLevel()),
                                      name=f"octohub-child-{task_type}", daemon=True)
        self.process.start()
        # Our copies of the child's ends: closed, so that its death is an EOF here and ours one there.
        child_commands.close()
        child_events.close()
        self.pid: Optional[int] = self.process.pid
        self.tasks = 0
        self.task_id: Optional[str] = None  # the task it runs now
        self.killed: Optional[str] = None  # the task a hard stop killed it for
        self.stopping = False  # killed by the node's stop while it ran a task
        self.live: dict[str, int] = {}  # resource name -> how many the child holds (its own messages say)
        self.tally = tally

    def counted(self, name: str, change: int) -> None:
        """The child made (+1) or tore down (-1) a resource."""
        self.live[name] = self.live.get(name, 0) + change
        if change > 0:
            self.tally.made(name)
        else:
            self.tally.torn(name, -change)

    def kill(self) -> None:
        """Kill the child and every process it started (_platform/process_tree.py)."""
        kill_tree(self.pid or 0, self.process.kill)

    def close(self) -> None:
        # Told to stop, or dead: what it held is torn down (or ended with its process tree).
        for name, count in self.live.items():
            if count > 0:
                self.tally.torn(name, count)
        self.live.clear()
        for conn in (self.commands, self.events):
            try:
                conn.close()
            except OSError:
                pass

    def exitcode(self) -> Optional[int]:
        self.process.join(1.0)  # it is dead or dying: its end of the pipe is closed
        return self.process.exitcode


class IsolatedHandler:
    """Runs one task type's handler in child processes; called by the runner like the handler itself.

    Args:
        task_type: the type, for names and messages.
        handler: a module-level function (see :func:`check_importable`).
        max_tasks_per_child: replace a child after this many tasks (None: never).
        max_memory_per_child: replace a child whose memory after a task is above this (MB; None: never).
        log: where its lines go: the node's logger, which puts the pc_id in front of each.
    """

    def __init__(self, task_type: str, handler: Callable[..., Any], *, max_tasks_per_child: Optional[int] = None,
                 max_memory_per_child: Optional[float] = None, log: Any = logger,
                 resources: tuple[ResourceSpec, ...] = (), tally: Optional[Tally] = None) -> None:
        self.task_type = task_type
        self._log = log
        self.handler = handler
        self._module, self._qualname = check_importable(task_type, handler)
        self._middleware: tuple[tuple[str, str], ...] = ()  # (module, qualname) of each, the outermost first
        # What a child needs to make them: each factory found again by module and name, as the handler is.
        self._resources = tuple((spec.name, *check_importable(task_type, spec.factory, f"resource {spec.name!r}"),
                                 spec.max_uses, spec.max_age) for spec in resources)
        self._tally = Tally() if tally is None else tally
        self._max_tasks = max_tasks_per_child
        self._max_bytes = None if max_memory_per_child is None else max_memory_per_child * 1024 * 1024
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._busy: dict[str, _Child] = {}  # task_id -> child
        self._retired: list[_Child] = []  # told to stop, not yet reaped
        self._counts = {"started": 0, "crashes": 0, "recycled": 0, "killed": 0}

    def __repr__(self) -> str:
        return f"IsolatedHandler({self.task_type!r}, {self._module}.{self._qualname})"

    def use_middleware(self, middleware: tuple, *, apply: bool = True) -> None:
        """Children started from now on run the handler inside ``middleware`` (the runner's chain).

        Raises:
            ValueError: a middleware a child cannot import by module and name.
        """
        refs = tuple(check_importable(self.task_type, fn, "middleware") for fn in middleware)
        if apply:
            self._middleware = refs

    # -- on a worker thread ----------------------------------------------------------------------

    def __call__(self, task: Mapping[str, Any]) -> Any:
        """Run ``task`` in an idle child (a new one if none is idle) and return its handler's result.

        Raises:
            WorkerCrashed: the child died while it ran the task (or could not start).
            HardStop: the board's hard stop killed the child (answered as TaskCancelled).
            Exception: the handler's own exception, as type name and text.
        """
        control = current_task()
        task_id = control.task_id or ""
        child = self._acquire(task_id)
        try:
            child.commands.send(("run", task_id, self.task_type, dict(task),
                                 None if control.task_key is None else str(control.task_key)))
            outcome = self._wait(child, control)
        except (EOFError, OSError):
            how = describe_exit(child.exitcode())  # joined: the dead child is reaped, never a zombie
            self._release(child, crashed=True)
            if child.killed == task_id:
                raise HardStop() from None  # the board's hard stop killed it: answered as TaskCancelled
            if child.stopping:
                how = f"was stopped with the node ({how})"
            self._log.warning("task %s (%s): child %s %s", task_id, self.task_type, child.pid, how)
            raise WorkerCrashed(f"child process {child.pid} {how}") from None
        kind, *rest = outcome
        self._release(child, retire=self._worn_out(child, rest[-1]))
        if kind == "result":
            return rest[0]
        raise remote_error(rest[0], rest[1], rest[2])

    def _wait(self, child: _Child, control: TaskControl) -> tuple:
        """Messages from the child until its outcome; passes the cancel flag on once."""
        told = False
        while True:
            if not told and control.cancel_reason is not None:
                told = True
                child.commands.send(("cancel", control.task_id, control.cancel_reason))
            if not child.events.poll(CANCEL_POLL):
                continue
            message = child.events.recv()
            if message[0] == "progress":
                control.progress(message[1], message[2])
            elif message[0] == "log":
                replay(message[1])
            elif message[0] == "resource":
                child.counted(message[1], message[2])
            else:
                return message

    def _acquire(self, task_id: str) -> _Child:
        with self._lock:
            self._reap()
            while self._idle:
                child = self._idle.pop()
                if child.process.is_alive():
                    break
                self._counts["crashes"] += 1  # died while idle (killed from outside, OOM killer)
                self._log.warning("%s: idle child %s %s; starting another", self.task_type, child.pid,
                               describe_exit(child.process.exitcode))
                child.close()
            else:
                child = None
            if child is None:
                self._counts["started"] += 1
        if child is None:
            child = self._start()
        with self._lock:
            child.task_id = task_id
            self._busy[task_id] = child
        return child

    def _start(self) -> _Child:
        child = _Child(self._module, self._qualname, self.task_type, self._resources, self._tally, self._middleware)
        try:
            if not child.events.poll(START_TIMEOUT):
                raise WorkerCrashed(f"child process {child.pid} did not start within {START_TIMEOUT:g} s")
            message = child.events.recv()
        except (EOFError, OSError):
            message = ("broken", f"child process {child.pid} {describe_exit(child.exitcode())} while starting")
        except BaseException:
            _kill(child)
            raise
        if message[0] != "ready":
            _kill(child)
            raise WorkerCrashed(message[1])
        return child

    def _worn_out(self, child: _Child, rss: Optional[int]) -> bool:
        child.tasks += 1
        if self._max_tasks is not None and child.tasks >= self._max_tasks:
            return True
        if self._max_bytes is not None and rss is not None and rss > self._max_bytes:
            self._log.info("%s: child %s uses %.0f MB (max_memory_per_child %g): replaced", self.task_type,
                        child.pid, rss / 1048576, self._max_bytes / 1048576)
            return True
        return False

    def _release(self, child: _Child, *, crashed: bool = False, retire: bool = False) -> None:
        with self._lock:
            self._busy.pop(child.task_id or "", None)
            child.task_id = None
            if crashed or child.killed:  # killed: by a hard stop that came as the result did
                self._counts["killed" if child.killed else "crashes"] += 1
                child.close()
            elif retire:
                self._counts["recycled"] += 1
                _tell_stop(child)
                self._retired.append(child)
                # Daemon: it only waits for a child told to stop (and kills it after STOP_TIMEOUT), so that
                # the exited child is reaped at once without making this task's result wait for it.
                threading.Thread(target=_reap_one, args=(child,), name="octohub-child-reaper", daemon=True).start()
            else:
                self._idle.append(child)

    def _reap(self) -> None:
        """Forget retired children that have exited (is_alive() waits for them, so none is a zombie)."""
        self._retired = [child for child in self._retired if child.process.is_alive()]

    # -- on the timers thread: the hard stop ------------------------------------------------------

    def kill(self, task_id: str) -> bool:
        """Kill the child running ``task_id`` (a real hard stop, even in C); False if none runs it."""
        with self._lock:
            child = self._busy.get(task_id)
            if child is None:
                return False
            child.killed = task_id
        child.kill()  # SIGKILL to its process group on POSIX; TerminateProcess (and so its job) on Windows
        return True

    def pid_of(self, task_id: str) -> Optional[int]:
        """The pid of the child running ``task_id``, if one does."""
        child = self._busy.get(task_id)
        return None if child is None else child.pid

    # -- observability and stop -----------------------------------------------------------------

    def view(self) -> dict[str, int]:
        """Children alive and busy now, and how many were started, crashed, recycled, killed by a hard stop."""
        with self._lock:
            self._reap()
            busy = len(self._busy)
            return {"alive": busy + len(self._idle), "busy": busy, **self._counts}

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every child: "stop", then join for ``timeout``, then kill. A child still busy is killed."""
        with self._lock:
            idle, self._idle = self._idle, []
            busy = list(self._busy.values())
            retired, self._retired = self._retired, []
        for child in idle:
            _tell_stop(child)
        for child in busy:
            child.stopping = True
            child.kill()
        deadline = time.monotonic() + timeout
        for child in idle + busy + retired:
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                _kill(child)


def _tell_stop(child: _Child) -> None:
    try:
        child.commands.send(("stop",))
    except OSError:
        pass  # it is gone already
    child.close()


def _reap_one(child: _Child) -> None:
    child.process.join(STOP_TIMEOUT)
    if child.process.is_alive():
        _kill(child)


def _kill(child: _Child) -> None:
    child.kill()
    child.process.join(STOP_TIMEOUT)
    child.close()


def isolate(task_type: str, handler: Callable[..., Any], options: TaskOptions,
            resources: Optional[ResourceRegistry] = None, *, log: Any = logger) -> Callable[..., Any]:
    """``handler`` as the runner should call it: itself, with its resources (``uses=``), or an
    :class:`IsolatedHandler` for ``isolation="process"`` (logging on ``log``, the node's logger).

    Raises:
        ValueError: a handler (or a resource's factory) a child cannot import, a resource not registered
            (the options themselves were checked by ``TaskOptions.build``).
    """
    registry = ResourceRegistry() if resources is None else resources
    specs = registry.specs_for(task_type, options.uses)
    if options.isolation is None:
        return UsingResources(handler, specs, registry.held) if specs else handler
    return IsolatedHandler(task_type, handler, max_tasks_per_child=options.max_tasks_per_child,
                           max_memory_per_child=options.max_memory_per_child, log=log, resources=specs,
                           tally=registry.tally)


def isolation_view(handlers: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """task type -> its children (alive, busy, started, crashes, recycled, killed), for isolated types."""
    return {name: h.view() for name, h in handlers.items() if isinstance(h, IsolatedHandler)}


def stop_children(handlers: Iterable[Any]) -> None:
    """Stop the children of every isolated handler among ``handlers`` (the node's stop)."""
    for handler in handlers:
        if isinstance(handler, IsolatedHandler):
            handler.stop()
