"""``NodeWebSocketClient``: the facade users embed, start and stop.

The public API, in the seed's names, with its docstrings (the reference users read). The parts and
their wiring are :class:`~octohub_sync._node.assembly.Node`'s; the order of stop() is
_node/stop_sequence.py's.

Why one module: it is the one class users embed; its methods are a few lines each, and their
docstrings (the API reference, docs/api.md) are most of its length.
"""
from __future__ import annotations

import threading
from typing import Any, Optional

from ._config.settings import Settings, load_settings
from ._execution.builtin_tasks import TaskHandler
from ._execution.options import Key, TaskOptions
from ._execution.resources import ResourceSpec
from ._isolation.pool import isolate, stop_children
from ._node.assembly import Node
from ._node.receiver import MessageHandler
from ._ops.liveness import Verdict
from .exceptions import GaveUpError
from .sdnotify import NotifySocket

__all__ = ["NodeWebSocketClient"]

#: Steps of wait_stopped() (seconds): how late it notices ``until`` or a give-up, and how often an idle
#: program's main thread wakes (Windows cannot interrupt a wait without a timeout with Ctrl-C).
WAIT_STEP = 1.0


class NodeWebSocketClient:
    """An OctoHub node: connects, receives tasks, runs handlers, sends results back.

    Args:
        server_host: the API server's host (the original asyncio client's first positional
            argument); overrides ``OCTOHUB_SERVER_HOST`` unless None.
        server_port: the API server's port (its second); overrides ``OCTOHUB_SERVER_PORT`` unless None.
        signature_key: the hub's key (its third); overrides ``OCTOHUB_SIGNATURE_KEY`` unless None.
        settings: complete settings; when given, nothing is read from the environment.
        env_file: dotenv file to read (default ``./.env`` if present; ``False`` for none).
        systemd_notify: tell systemd about readiness, liveness and stopping through this socket
            (``NotifySocket.from_environ()``; see sdnotify.py). Off by default: the process
            decides whether it speaks for itself to systemd, and ``octohub-node`` does.
        **overrides: any other setting by field name (``max_workers=16``, ``pc_id=...``).

    Raises:
        ConfigError: a setting is invalid or the key is missing.
    """

    def __init__(
        self,
        server_host: Optional[str] = None,
        server_port: Optional[int] = None,
        signature_key: Optional[str] = None,
        *,
        settings: Optional[Settings] = None,
        env_file: Any = None,
        systemd_notify: Optional[NotifySocket] = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            overrides.update(server_host=server_host, server_port=server_port, signature_key=signature_key)
            settings = load_settings(overrides, env_file=env_file)
        self._node = node = Node(settings, systemd_notify=systemd_notify, stop=self.stop)
        # What scripts and tests have always read on the facade: the same objects as the node's.
        self.settings, self.identity, self.pc_id, self.log = settings, node.identity, node.pc_id, node.log
        self.store, self.delivery, self.runner = node.store, node.delivery, node.runner
        self.task_board, self.receiver = node.task_board, node.receiver
        self.log.info("initialised NodeWebSocketClient, PC ID: %s (%s)", self.pc_id, self.identity.describe())
        for warning in settings.warnings:  # an unknown OCTOHUB_* name: a typo, said once, at start
            self.log.warning("%s", warning)
        if settings.uses_public_key:
            self.log.warning("OCTOHUB_SIGNATURE_KEY is the public example key from env.example: "
                             "anyone can impersonate this hub; set a secret key in production")

    # -- handlers ------------------------------------------------------------------------------

    def register_task_handler(self, task_type: str, handler: Optional[TaskHandler] = None, *,
                              retry_interrupted: bool = True, concurrency: Optional[int] = None,
                              key: Optional[Key] = None, rate: Optional[str] = None,
                              isolation: Optional[str] = None, max_tasks_per_child: Optional[int] = None,
                              max_memory_per_child: Optional[float] = None, uses: Optional[list[str]] = None,
                              **unknown: Any) -> Any:
        """Run ``handler(task)`` for tasks of ``task_type``; without ``handler``, a decorator.

        The handler receives the whole task message (``task["data"]`` holds the
        parameters) and returns a JSON-serialisable result; raising an exception
        answers the hub ``failed``. It runs on a worker thread. The result travels as JSON:
        a dict's int keys arrive as strings (``{1: "a"}`` -> ``{"1": "a"}``), tuples as lists.

        Args:
            retry_interrupted: with a ledger (OCTOHUB_STATE_DIR), a task of this type that was
                running when the process died and arrives again runs again (True, at-least-once),
                or is answered ``failed`` ``TaskInterrupted`` (False: work that must never be
                repeated silently).
            concurrency: at most this many tasks of this type run at once (per key value with
                ``key``); the others wait in arrival order, without holding a worker that other
                types could use, and count against OCTOHUB_MAX_PENDING.
            key: a field name of ``task["data"]`` (``"account"``) or a function ``task -> hashable``:
                ``concurrency`` and ``rate`` then hold per key value. A task whose key cannot be
                read is answered ``failed`` ``TaskKeyError`` without running.
            rate: ``"N/s"``, ``"N/m"`` or ``"N/h"``: at most N tasks begin within any such period
                (per key value with ``key``); the others wait and begin as soon as allowed, in order.
            isolation: ``"process"`` runs the handler in a child process (_isolation/boundary.py;
                docs/isolation.md); None runs it on the worker thread.
            max_tasks_per_child: with isolation, replace a child after this many tasks.
            max_memory_per_child: with isolation, replace a child whose memory after a task is above this (MB).
            **unknown: ``retries=``, ``retry_on=``, ``retry_backoff=``, ``retry_backoff_max=`` (docs/retries.md).
            uses: names of resources (:meth:`register_resource`, registered before) the handler gets
                as keyword arguments: ``handler(task, browser=...)`` (docs/resources.md).

        Returns:
            The handler, unchanged (so the decorator form leaves it callable and testable).

        Raises:
            ValueError, TypeError: a keyword's value is invalid (the message names the task type,
                the value and the file and line of the call), ``key`` without ``concurrency`` or
                ``rate``, no such keyword (with the one meant), or ``isolation="process"`` with a
                handler a child process cannot import (a lambda, a closure), or ``uses`` names a resource
                not registered.
        """
        options = TaskOptions.build(task_type, retry_interrupted=retry_interrupted, concurrency=concurrency,
                                    key=key, rate=rate, isolation=isolation, max_tasks_per_child=max_tasks_per_child,
                                    max_memory_per_child=max_memory_per_child, uses=uses,
                                    **unknown)
        if handler is None:
            return lambda fn: self._register(task_type, fn, options)
        return self._register(task_type, handler, options)

    def _register(self, task_type: str, handler: TaskHandler, options: TaskOptions) -> TaskHandler:
        if not callable(handler):
            raise TypeError(f"task handler for {task_type!r} is not callable")
        replaced = self.runner.register(task_type, isolate(task_type, handler, options, self._node.resources, log=self.log), options)
        stop_children([replaced])  # a replaced isolated handler's children
        return handler

    def add_middleware(self, fn: Any) -> Any:
        """Run ``fn(task, call_next)`` around every handler call, the first added outermost (docs/middleware.md).

        Returns ``fn`` (a decorator too). Raises TypeError, ValueError (a lambda for an isolated type) or
        RuntimeError (the node has started)."""
        self.runner.add_middleware(fn)
        return fn

    def register_resource(self, name: str, factory: Optional[Any] = None, *, max_uses: Optional[int] = None,
                          max_age: Optional[float] = None) -> Any:
        """Make ``factory`` a resource that handlers registered with ``uses=[name]`` get as keyword ``name``.

        ``factory`` is a generator function written like a pytest fixture: setup before ``yield``
        (the value handlers get), teardown after. One is made lazily on each worker thread (or
        isolated child) that runs a task using it, reused by later tasks there, and torn down there:
        at the node's stop, after ``max_uses`` tasks or ``max_age`` seconds, or when a handler
        raises :class:`~octohub_sync.ResourceBroken` (docs/resources.md).

        Args:
            name: the keyword argument handlers get it as (an identifier).
            factory: the generator function; for ``isolation="process"`` types, a module-level function.
            max_uses: tear it down after this many tasks (None: never).
            max_age: tear it down once it is this many seconds old (None: never).

        Returns:
            The factory, unchanged; without ``factory``, a decorator.

        Raises:
            ValueError, TypeError: a bad name, factory or limit (the message names the resource).
        """
        if factory is None:
            return lambda fn: self.register_resource(name, fn, max_uses=max_uses, max_age=max_age)
        self._node.resources.register(ResourceSpec.build(name, factory, max_uses=max_uses, max_age=max_age))
        return factory

    def register_message_handler(self, kind: str, handler: Optional[MessageHandler] = None) -> Any:
        """Call ``handler(message)`` for hub messages of ``kind`` (one at a time, in order).

        Returns:
            The handler, unchanged; without ``handler``, a decorator.
        """
        if handler is None:
            return lambda fn: self.register_message_handler(kind, fn)
        if not callable(handler):
            raise TypeError(f"message handler for {kind!r} is not callable")
        self.receiver.register_message_handler(kind, handler)
        return handler

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "NodeWebSocketClient":
        """Start connecting in the background and return at once."""
        node = self._node
        with node.lifecycle:
            if node.watchdog is None:
                node.start(tasks=self.running_tasks, waiting=self.waiting_tasks)
        return self

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Stop gracefully: refuse new tasks, let running ones finish, send results, close.

        The steps and why each comes where it does: _node/stop_sequence.py (docs/architecture.md).
        New tasks are answered ``NodeShuttingDown``; running and queued tasks get up to
        ``timeout`` (a task already answered ``TaskTimeout`` is not waited for); tasks that never
        started are answered; every result goes out before the close handshake. A task or an
        answer that comes during that handshake is never written after the node's close frame:
        with a ledger it is kept there and sent after the next start's ``node_ready``; without
        one it is lost with the process (counted as not sent, unless it is a ``NodeShuttingDown``
        answer to a task that never ran: no work is lost).

        Args:
            timeout: how long running tasks may take (default OCTOHUB_SHUTDOWN_TIMEOUT).

        Returns:
            True if every task finished and every result reached the hub; False if a handler
            still runs (past ``timeout``, or past its time limit) or a result was not sent.
        """
        node = self._node
        with node.lifecycle:
            watchdog, node.watchdog = node.watchdog, None
            if watchdog is None:
                return node.stopped_clean
            clean = node.stop(watchdog, self.settings.shutdown_timeout if timeout is None else timeout)
            self.log.info("node stopped%s", f" (recycled: {self.recycle})" if self.recycle else "")
            return clean

    def run_forever(self) -> None:
        """Start (if needed) and block until the node is stopped.

        Returns once the node stopped: by :meth:`stop` from another thread, or by itself (a recycle).
        Ctrl+C (KeyboardInterrupt in the main thread) stops the node gracefully first (running tasks
        get up to OCTOHUB_SHUTDOWN_TIMEOUT), then raises the KeyboardInterrupt again, as Python's own
        ``serve_forever()`` does: code after the call does not run as if nothing happened. A script
        ends quietly with ``except KeyboardInterrupt: return 130`` (examples/simple_client.py).

        Raises:
            GaveUpError: OCTOHUB_MAX_RECONNECT_ATTEMPTS consecutive attempts failed.
            KeyboardInterrupt: after Ctrl+C, once the node stopped (a second Ctrl+C cuts the stop short).
        """
        self.start()
        try:
            self.wait_stopped()
        except KeyboardInterrupt:
            self.stop()
            raise
        self.stop()
        if self.failure is not None:
            raise self.failure

    @property
    def recycle(self) -> Optional[str]:
        """Why the node recycled itself (OCTOHUB_MAX_TASKS, _MAX_MEMORY, _MAX_UPTIME), else None.

        Once set, the node refuses new tasks, drains and stops by itself: ``wait_stopped()``
        returns, and ``octohub-node`` exits with ``ExitCode.RECYCLE``.
        """
        return self._node.recycler.reason

    def wait_stopped(self, until: Optional[threading.Event] = None) -> None:
        """Block until the node was stopped, gave up reconnecting, or ``until`` is set.

        Waits in steps of :data:`WAIT_STEP`, so that Ctrl-C interrupts it where ``Event.wait()`` alone cannot.
        """
        while not self._node.finished.wait(WAIT_STEP):
            if self.failure is not None or (until is not None and until.is_set()):
                return

    @property
    def failure(self) -> Optional[GaveUpError]:
        """Why the node gave up reconnecting (OCTOHUB_MAX_RECONNECT_ATTEMPTS) since its last start, else None."""
        return self._node.status.failure

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Block until the node is ready for tasks: connected, and ``node_ready`` sent; False on timeout."""
        return self._node.link.wait_ready(timeout)

    def is_connected(self) -> bool:
        """True while the node is ready for tasks: connected, and ``node_ready`` sent on that connection.

        (The seed's name: a connection whose handshake is still on counts as not connected.)
        """
        return self._node.link.ready

    def get_pc_id(self) -> str:
        """This node's id."""
        return self.pc_id

    def __enter__(self) -> "NodeWebSocketClient":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- observability -------------------------------------------------------------------------

    def liveness(self) -> Verdict:
        """Is the process alive: its watchdog and timers loops tick and it has not stopped?

        A hub outage leaves it alive (it is reconnecting); ``/livez`` and systemd's watchdog use this.
        """
        return self._node.liveness()

    def readiness(self) -> Verdict:
        """Can it take tasks now: connected, node_ready sent, the hub heard within two ping intervals?

        A hub outage makes it not ready (``/readyz`` 503) while the node stays alive.
        """
        return self._node.readiness()

    def stats(self) -> dict[str, Any]:
        """Connection state, counters and queue sizes right now."""
        return self._node.stats()

    def waiting_tasks(self) -> list[dict[str, Any]]:
        """Tasks held back by their type's ``concurrency`` or ``rate`` (also in ``/tasks``).

        They are among ``stats()["tasks_queued"]``; ``tasks_waiting`` counts them.

        Returns:
            One dict per task type and key value with tasks waiting: ``task_type``, ``key``
            (None without ``key=``; a non-JSON key value as its ``str``) and ``tasks`` (their ids, in
            the order they will start).
        """
        return [{"task_type": task_type, "key": key if key is None or isinstance(key, (str, int, float)) else str(key),
                 "tasks": ids} for task_type, key, ids in self.runner.waiting()]

    def running_tasks(self) -> list[dict[str, Any]]:
        """Every task whose handler runs now, the longest-running first (also ``/tasks`` on the metrics port).

        Returns:
            One dict per task: ``task_id``, ``task_type``, ``started`` (Unix time), ``elapsed`` (s),
            ``progress`` (None, or ``fraction``, ``message`` and ``at``), ``cancel_requested``
            and ``cancel_reason``.
        """
        return self._node.tasks.view()

    def log_status(self) -> None:
        """Log the one-line summary (every OCTOHUB_STATUS_INTERVAL seconds)."""
        self._node.log_status()
