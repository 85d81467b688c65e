"""``NodeWebSocketClient``: the facade users embed, start and stop.

Why one module: it is the public API, in the seed's names, with its docstrings (the reference users
read), and the wiring of every part; the parts themselves are elsewhere, and so is the order of
stop() (_node/stop_sequence.py). Split, one public method would be read in two files.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Optional

from ._node import stop_sequence
from ._platform import node_guard
from ._transport.api_lookup import resolve_address, ssl_context
from ._node.clock_jumps import pause_threshold
from ._config.settings import Settings, load_settings, require_key
from ._transport.connect_deadline import deadline_session
from ._transport.connection import Connection
from ._node.connection_log import ConnectionLog
from ._delivery.delivery import ResultDelivery
from .exceptions import GaveUpError
from ._execution.builtin_tasks import TaskHandler
from ._config.identity import resolve_pc_id
from ._isolation.pool import isolate, isolation_view, stop_children
from ._delivery.ledger import Ledger
from ._execution.task_run import TaskRegistry
from ._execution.resources import ResourceRegistry, ResourceSpec
from ._transport.link import Link
from ._ops.liveness import Attempt, Heartbeats, Verdict, liveness, readiness
from ._execution.options import Key, TaskOptions
from ._node.receiver import FrameReceiver, MessageHandler
from ._node.recycle import Recycler
from ._node.reconnect import Decision, ReconnectPolicy
from ._execution.runner import TaskRunner
from .sdnotify import NotifySocket, SystemdNotifier
from ._transport.sender import Sender
from ._transport.netpath import PathCheck
from ._ops.node_state import NodeStatus
from ._ops.stats import Stats
from ._delivery.store import MemoryStore
from ._execution.handler_calls import TaskBoard
from ._node.timers import Alarm, Timers
from ._node.watchdog import TICK as WATCHDOG_TICK, Watchdog
from ._transport.frame_reader import frame_bound

__all__ = ["NodeWebSocketClient"]

logger = logging.getLogger("octohub_sync")

#: Steps of wait_stopped() (seconds): how late it notices ``until`` or a give-up, and how often an idle
#: program's main thread wakes (Windows cannot interrupt a wait without a timeout with Ctrl-C).
WAIT_STEP = 1.0

#: What a probe asks the hub to answer with (_node/watchdog.py): a ping frame's payload, or a JSON ping's request_id.
PROBE_PAYLOAD = b"octohub-probe"


class _NodeLog(logging.LoggerAdapter):
    """Puts the node's pc_id in front of every line (several nodes may share a log)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['pc_id']}] {msg}", kwargs


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
        require_key(settings)
        self.settings = settings
        #: Where the pc_id came from (_config/identity.py): set, kept in the state directory, or derived.
        self.identity = resolve_pc_id(pc_id=settings.pc_id, instance=settings.instance,
                                      state_dir=settings.state_dir, log=logger)
        self.pc_id = self.identity.value
        self.log = _NodeLog(logger, {"pc_id": self.pc_id})
        #: The node's state: _ops/node_state.py alone changes it, on this class's calls.
        self._status = NodeStatus()
        self._stats = Stats(self._status)
        #: The current connection: the watchdog attaches each attempt, the delivery says when it is ready.
        self._link = Link()
        # Built in the order they depend on each other: results flow runner -> delivery -> store,
        # frames flow receiver -> runner / delivery; nothing points back.
        self.store = (MemoryStore() if settings.state_dir in (None, "off") else
                      Ledger(settings.state_dir, self.pc_id, cache_size=settings.result_cache_size,
                             stats=self._stats, log=self.log, max_result_bytes=settings.max_result_bytes))
        #: A path silent this long (no pong of any kind, or no confirmation while they are due) is dead.
        self._dead_after = settings.ping_interval + settings.ping_timeout + 1.0
        # Writes the liveness loops must not wait for (_transport/sender.py): started and stopped with the node.
        self._sender = Sender(log=self.log)
        # Wakes an idle node's timers loop when work arrives (_node/timers.py).
        self._alarm = Alarm()
        self.delivery = ResultDelivery(outbox_size=settings.outbox_size, store=self.store, stats=self._stats,
                                       log=self.log, post=self._sender.post,
                                       confirm_deadline=self._dead_after, link=self._link, wake=self._alarm.ring)
        #: Every accepted task, from admission to its answer: deadlines, cancel flags, the grace.
        self._tasks = TaskRegistry(cancel_grace=settings.cancel_grace)
        self.task_board = TaskBoard(
            send=self.delivery.send_progress, connected=lambda: self._link.ready,
            progress_interval=settings.progress_interval, tasks=self._tasks, log=self.log)
        self._recycler = Recycler(max_tasks=settings.max_tasks, max_memory=settings.max_memory,
                                  max_uptime=settings.max_uptime, close=lambda: self.runner.stop_accepting(),
                                  on_recycle=self._recycle, log=self.log)
        #: Resources handlers use (register_resource): made on the worker that uses them, torn down there.
        self.resources = ResourceRegistry()
        self.runner = TaskRunner(
            deliver=self.delivery.deliver, stats=self._stats, max_workers=settings.max_workers,
            max_pending=settings.max_pending, task_timeout=settings.task_timeout,
            cache_size=settings.result_cache_size, max_result_bytes=settings.max_result_bytes,
            store=self.store, log=self.log, call=self.task_board.call, max_tasks=settings.max_tasks,
            on_max_tasks=self._recycler.tasks_reached, tasks=self._tasks,
            log_errors=settings.log_task_errors, on_thread_exit=self.resources.release_thread)
        self.receiver = FrameReceiver(
            pc_id=self.pc_id, max_message_bytes=settings.max_message_bytes, capacity=settings.max_workers,
            delivery=self.delivery, submit=self._submit, refuse_unread=self.runner.refuse_unread, cancel=self.runner.cancel,
            task_types=lambda: sorted(self.runner.handlers), on_notice=self._hub_notice,
            stats=self._stats, log=self.log, on_ready=self._ready_for_tasks)
        self._ssl = ssl_context(settings) if settings.ws_scheme == "wss" else None
        self._http = deadline_session()  # its sockets are cut with each attempt's deadline
        self._finished = threading.Event()
        self._stopped_clean = True  # what the last stop() returned, for a second call
        self._lifecycle = threading.Lock()
        self._watchdog: Optional[Watchdog] = None
        self._guarded = False  # this node holds the process's tree guard (_platform/node_guard.py)
        self._timers: Optional[Timers] = None
        self._metrics: Any = None
        self._connection_log = ConnectionLog(pc_id=self.pc_id, stats=self._stats, log=self.log)
        # The loops whose ticks make the node alive (_ops/liveness.py): /livez and systemd's watchdog.
        self._beats = Heartbeats(("octohub-watchdog", "octohub-timers"))
        # The watchdog loop's longest sleep: systemd's watchdog pings go out on its ticks.
        systemd_interval = None if systemd_notify is None else systemd_notify.watchdog_interval
        self._watchdog_tick_max = min(WATCHDOG_TICK, systemd_interval or WATCHDOG_TICK)
        self._notifier = None if systemd_notify is None else SystemdNotifier(
            send=systemd_notify.send, alive=self.liveness, stats=self.stats,
            watchdog_interval=systemd_notify.watchdog_interval, log=self.log)
        self.log.info("initialised NodeWebSocketClient, PC ID: %s (%s)", self.pc_id, self.identity.describe())
        if settings.uses_public_key:
            self.log.warning("OCTOHUB_SIGNATURE_KEY is the public example key from env.example: "
                             "anyone can impersonate this hub; set a secret key in production")

    # -- handlers ------------------------------------------------------------------------------

    def register_task_handler(self, task_type: str, handler: Optional[TaskHandler] = None, *,
                              retry_interrupted: bool = True, concurrency: Optional[int] = None,
                              key: Optional[Key] = None, rate: Optional[str] = None,
                              isolation: Optional[str] = None, max_tasks_per_child: Optional[int] = None,
                              max_memory_per_child: Optional[float] = None, uses: Optional[list[str]] = None) -> Any:
        """Run ``handler(task)`` for tasks of ``task_type``; without ``handler``, a decorator.

        The handler receives the whole task message (``task["data"]`` holds the
        parameters) and returns a JSON-serialisable result; raising an exception
        answers the hub ``failed``. It runs on a worker thread.

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
            uses: names of resources (:meth:`register_resource`, registered before) the handler gets
                as keyword arguments: ``handler(task, browser=...)`` (docs/resources.md).

        Returns:
            The handler, unchanged (so the decorator form leaves it callable and testable).

        Raises:
            ValueError, TypeError: a keyword's value is invalid (the message names the task type
                and the value), or ``isolation="process"`` with a handler a child process cannot
                import (a lambda, a closure), or ``uses`` names a resource not registered.
        """
        options = TaskOptions.build(task_type, retry_interrupted=retry_interrupted, concurrency=concurrency,
                                    key=key, rate=rate, isolation=isolation, max_tasks_per_child=max_tasks_per_child,
                                    max_memory_per_child=max_memory_per_child, uses=uses)
        if handler is None:
            return lambda fn: self._register(task_type, fn, options)
        return self._register(task_type, handler, options)

    def _register(self, task_type: str, handler: TaskHandler, options: TaskOptions) -> TaskHandler:
        if not callable(handler):
            raise TypeError(f"task handler for {task_type!r} is not callable")
        replaced = self.runner.register(task_type, isolate(task_type, handler, options, self.resources), options)
        stop_children([replaced])  # a replaced isolated handler's children
        return handler

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
        self.resources.register(ResourceSpec.build(name, factory, max_uses=max_uses, max_age=max_age))
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
        with self._lifecycle:
            if self._watchdog is not None:
                return self
            snapshot = self.store.open()  # a ledger held by another process fails here, before anything runs
            self.runner.restore(snapshot.finished, snapshot.started)
            self.delivery.restore(snapshot.pending)
            if self.settings.metrics_port:
                from ._ops.status_server import MetricsServer  # only nodes that serve metrics pay for it
                metrics = MetricsServer(stats=self.stats, failed=lambda: self.failure is not None,
                                        host=self.settings.metrics_host, port=self.settings.metrics_port, log=self.log,
                                        alive=self.liveness, ready=self.readiness, tasks=self.running_tasks,
                                        waiting=self.waiting_tasks)
                try:
                    metrics.start()  # a port in use fails here, before anything else has started
                except BaseException:
                    self.store.close()
                    raise
                self._metrics = metrics
            if self.settings.connect_mode == "api":  # in direct mode, the first address is judged as it is made
                self._connection_log.address(self.settings.api_base)
            self._finished.clear()
            self._status.starting()
            self._beats.reset(time.monotonic())
            self._recycler.started(time.monotonic())
            self.runner.start()
            if self.resources.specs:  # what handlers start on threads ends with the node, even a killed one
                node_guard.acquire()
                self._guarded = True
            s = self.settings
            self._sender.start()
            self._timers = Timers(expire=self.runner.expire, status=self.log_status, status_interval=s.status_interval,
                                  log=self.log, tasks=self.task_board.tick, post=self._sender.post,
                                  busy=lambda: bool(self._tasks.runs) or self.delivery.busy(),
                                  writes=(self.delivery.tick, self.task_board.send_progress),
                                  keep_alive_due=self._keep_alive_due, keep_alive=self._keep_alive,
                                  on_tick=functools.partial(self._beats.beat, "octohub-timers"), alarm=self._alarm)
            self._timers.start()
            policy = ReconnectPolicy.from_settings(s)
            if snapshot.unclean and s.hub_read_timeout:
                # The last process never stopped: a connection it had may still be open at the hub.
                self.log.info("the last run of this node ended without stopping (its ledger was not closed): "
                              "re-registering once the hub has cleaned up a connection it may have left "
                              "(OCTOHUB_HUB_READ_TIMEOUT=%g s)", s.hub_read_timeout)
                policy = policy.abandoned(time.monotonic())
            self._watchdog = Watchdog(
                connect=self._new_connection, policy=policy,
                dead_after=self._dead_after, on_ended=self._connection_ended,
                on_reregister=lambda: self._stats.incr("reregistrations"), log=self.log,
                on_tick=self._watchdog_tick, pause_after=pause_threshold(s.ping_interval),
                on_pause=lambda pause: self._stats.incr("pauses"), link=self._link,
                path=PathCheck(probe=self._probe, log=self.log),
                tick=self._watchdog_tick_max)
            self._watchdog.start()
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
        with self._lifecycle:
            watchdog, self._watchdog = self._watchdog, None
            if watchdog is None:
                return self._stopped_clean
            limit = self.settings.shutdown_timeout if timeout is None else timeout
            wait = max(1.0, self.settings.connect_timeout)  # for a thread in a write, and for the close
            unfinished: list[str] = []
            stop_sequence.run({
                "say stopping": self._say_stopping,
                "refuse new tasks": self.runner.stop_accepting,
                "drain": lambda: unfinished.extend(self._drain(limit)),
                "release the pool": self.runner.shutdown,
                "stop children": lambda: stop_children(self.runner.handlers.values()),
                "settle the store": self.store.settle,
                "last sending": lambda: self.delivery.settle(timeout=wait),
                "stop the timers": self._stop_timers,
                "stop the send thread": lambda: self._sender.stop(timeout=wait),
                "close the connection": lambda: watchdog.stop(timeout=wait),
                "stop message handlers": self.receiver.close,
                "close the store": self.store.close,
                "stop the metrics server": self._stop_metrics,
            }, self.log)
            clean = stop_sequence.outcome(
                unfinished=unfinished, overdue=[tid for tid in self._tasks.overdue() if tid not in unfinished],
                turned_away=len(self.runner.turned_away(self.delivery.unsent())), unsent=self.delivery.waiting(),
                kept=self.settings.state_dir not in (None, "off"), log=self.log)
            if self._guarded:
                self._guarded = False
                node_guard.release()
            self._status.stopped()
            self._stopped_clean = clean
            self._finished.set()
            self._http.close()  # pooled API connections (to the hub, or to a proxy); a restart opens new ones
            self.log.info("node stopped%s", f" (recycled: {self.recycle})" if self.recycle else "")
            return clean

    # -- the steps of stop() (_node/stop_sequence.py says why in this order) ---------------------------------

    def _say_stopping(self) -> None:
        if self._notifier is not None:
            self._notifier.stopping()
        self._status.stopping()

    def _drain(self, limit: float) -> list[str]:
        unfinished = self.runner.drain(limit)
        if unfinished:
            self.log.warning("stopping with %d task(s) still running: %s", len(unfinished), ", ".join(unfinished[:10]))
        return unfinished

    def _stop_timers(self) -> None:
        if self._timers is not None:
            self._timers.stop()
            self._timers = None

    def _stop_metrics(self) -> None:
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None

    def run_forever(self) -> None:
        """Start (if needed) and block until the node is stopped.

        Raises:
            GaveUpError: OCTOHUB_MAX_RECONNECT_ATTEMPTS consecutive attempts failed.
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
        return self._recycler.reason

    def wait_stopped(self, until: Optional[threading.Event] = None) -> None:
        """Block until the node was stopped, gave up reconnecting, or ``until`` is set.

        Waits in steps of :data:`WAIT_STEP`, so that Ctrl-C interrupts it where ``Event.wait()`` alone cannot.
        """
        while not self._finished.wait(WAIT_STEP):
            if self.failure is not None or (until is not None and until.is_set()):
                return

    @property
    def failure(self) -> Optional[GaveUpError]:
        """Why the node gave up reconnecting (OCTOHUB_MAX_RECONNECT_ATTEMPTS) since its last start, else None."""
        return self._status.failure

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Block until the node is ready for tasks: connected, and ``node_ready`` sent; False on timeout."""
        return self._link.wait_ready(timeout)

    def is_connected(self) -> bool:
        """True while the node is ready for tasks: connected, and ``node_ready`` sent on that connection.

        (The seed's name: a connection whose handshake is still on counts as not connected.)
        """
        return self._link.ready

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
        return liveness(self._status.state, self._beats.ages(time.monotonic()))

    def readiness(self) -> Verdict:
        """Can it take tasks now: connected, node_ready sent, the hub heard within two ping intervals?

        A hub outage makes it not ready (``/readyz`` 503) while the node stays alive.
        """
        conn = self._link.conn
        now = time.monotonic()
        heard = max(self.receiver.last_frame, conn.last_pong if conn is not None else 0.0)
        attempt = None
        if conn is not None and conn.deadline is not None and conn.deadline.connecting:
            attempt = Attempt(conn.number, now - conn.deadline.started, conn.deadline.seconds)
        return readiness(self._status.state, ready=self._link.ready, silent_for=now - heard if heard else None,
                         ping_interval=self.settings.ping_interval, attempt=attempt)

    def stats(self) -> dict[str, Any]:
        """Connection state, counters and queue sizes right now."""
        snap = self._stats.snapshot()
        running, queued = self._tasks.counts()
        by_type: dict[str, int] = {}
        for task_type, _, ids in self.runner.waiting():
            by_type[task_type] = by_type.get(task_type, 0) + len(ids)
        snap.update(pc_id=self.pc_id, tasks_running=running, tasks_queued=queued, outbox=self.delivery.waiting(),
                    results_unconfirmed=self.delivery.unconfirmed(),
                    oldest_task_age=round(self._tasks.oldest_age(), 3),
                    tasks_waiting=sum(by_type.values()), waiting_by_type=by_type, recycle=self.recycle)
        snap["isolation"] = isolation_view(self.runner.handlers)  # children per isolated type
        snap["resources"] = self.resources.view()  # live, made, torn down per resource name
        return snap

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
        return self._tasks.view()

    def log_status(self) -> None:
        """Log the one-line summary (every OCTOHUB_STATUS_INTERVAL seconds)."""
        s = self.stats()
        self.log.info(
            "status: %s, tasks received %d, completed %d, failed %d, rejected %d, timed out %d, cancelled %d, "
            "running %d (longest %.0f s), queued %d (waiting for a limit %d), outbox %d, reconnects %d", s["state"],
            s["tasks_received"], s["tasks_completed"], s["tasks_failed"], s["tasks_rejected"], s["tasks_timed_out"],
            s["tasks_cancelled"], s["tasks_running"], s["oldest_task_age"], s["tasks_queued"], s["tasks_waiting"],
            s["outbox"], s["reconnects"])

    # -- called by the watchdog ------------------------------------------------------------------

    def _watchdog_tick(self, now: float, until: float) -> None:
        self._beats.beat("octohub-watchdog", now, until)
        if self._recycler.watches:
            self._recycler.tick(now)
        if self._notifier is not None:
            self._notifier.tick(now)

    def _recycle(self, reason: str) -> None:
        # Called on the watchdog thread or holding the runner's lock (OCTOHUB_MAX_TASKS): stop() joins
        # the watchdog and takes that lock, so another thread stops the node. Not a daemon: it finishes
        # the drain and the sending of results, which is the point of recycling. The node is stopping
        # from this moment (it refuses tasks), not from when that thread gets going.
        self._status.stopping()
        threading.Thread(target=self.stop, name="octohub-recycle").start()


    def _new_connection(self, number: int) -> Connection:
        """Connection attempt ``number``, not yet started."""
        conn = Connection(
            self._address, number=number, on_open=self._opened, on_frame=self.receiver.frame,
            on_closed=self._closed, on_pong=self.delivery.pong, ssl_context=self._ssl,
            route=self.settings.route, connect_timeout=self.settings.connect_timeout,
            ping_interval=self.settings.ping_interval, post=self._sender.post,
            max_frame_bytes=frame_bound(self.settings.max_message_bytes))
        return conn

    def _opened(self, conn: Connection) -> None:
        self._connection_log.opened(conn)
        self._alarm.ring()  # its keep-alive is due an interval from now: an idle timers loop plans for it

    def _submit(self, task: Any) -> None:
        self.runner.submit(task)
        self._alarm.ring()  # after the task is in the registry: an idle timers loop starts ticking for it

    def _address(self) -> str:
        address = resolve_address(self.settings, self.pc_id, self._http, self.log)
        self._connection_log.address(address.url)
        if address.skew is not None:
            self._stats.clock_skew = address.skew
        if self.settings.tls_insecure:
            self.log.warning("TLS certificate checks are OFF (OCTOHUB_TLS_INSECURE): anyone on the path can read the key's signatures and the tasks")
        return address.url

    def _connection_ended(self, conn: Connection, decision: Decision) -> None:
        self._connection_log.ended(conn, decision)
        if decision.delay is None:
            self._status.gave_up(decision.give_up)  # run_forever() and wait_stopped() see it
        else:
            self._status.lost()

    # -- called on the send thread ---------------------------------------------------------------

    def _keep_alive_due(self) -> Optional[float]:
        conn = self._link.conn
        return None if conn is None else conn.keep_alive_due()

    def _probe(self, conn: Connection) -> None:
        """(The watchdog.) Ask the hub for an answer on ``conn`` now, on the send thread."""
        self._sender.post(functools.partial(self._send_probe, conn))

    def _send_probe(self, conn: Connection) -> None:
        try:
            conn.ping(PROBE_PAYLOAD)
        except Exception as exc:  # like any failed send: the session is over
            self.log.info("probe failed (%s: %s); dropping the connection", type(exc).__name__, exc)
            conn.abort()

    def _keep_alive(self) -> None:
        """A keep-alive at least every OCTOHUB_PING_INTERVAL on the current connection (_transport/connection.py)."""
        conn = self._link.conn
        if conn is None:
            return
        try:
            conn.keep_alive(time.monotonic())
        except Exception as exc:  # like any failed send: the session is over
            self.log.info("keep-alive ping failed (%s: %s); dropping the connection", type(exc).__name__, exc)
            conn.abort()

    # -- called on the connection thread ---------------------------------------------------------

    def _closed(self, conn: Connection, code: Optional[int], error: str) -> None:
        self.delivery.detach(conn)
        if self._watchdog is not None:
            self._watchdog.wake()

    def _ready_for_tasks(self) -> None:
        self._status.ready()
        if self._notifier is not None:
            self._notifier.ready()

    def _hub_notice(self, replaced: bool) -> None:
        watchdog = self._watchdog
        if watchdog is not None:
            if replaced:
                watchdog.replaced()
            watchdog.wake()
