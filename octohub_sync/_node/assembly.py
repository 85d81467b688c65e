"""One node's parts, built in the order they depend on each other and wired by callables.

:class:`Node` is what ``NodeWebSocketClient`` (client.py, the public API and its docstrings) stands
on: it builds every part from the settings, starts the loops, runs the stop sequence, and holds the
callbacks the parts call (the watchdog's, the send thread's, the connection thread's). Results flow
runner -> delivery -> store; frames flow receiver -> runner / delivery; nothing points back, and no
part knows the facade.

Why one module: the callbacks below are the wiring itself: each is a few lines joining two parts,
and read next to the construction that hands it over they show who calls whom.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, Callable, Mapping, Optional

from .._config.identity import resolve_pc_id
from .._config.settings import Settings, require_key
from .._delivery.delivery import ResultDelivery
from .._delivery.ledger import Ledger
from .._delivery.store import MemoryStore
from .._execution import log_context
from .._execution.handler_calls import TaskBoard
from .._execution.resources import ResourceRegistry
from .._execution.runner import TaskRunner
from .._execution.task_run import TaskRegistry
from .._isolation.pool import isolation_view, stop_children
from .._ops.liveness import Attempt, Heartbeats, Verdict, liveness, readiness
from .._ops.node_state import NodeStatus
from .._ops.stats import Stats
from .._platform import node_guard
from .._transport.api_lookup import resolve_address, ssl_context
from .._transport.connect_deadline import deadline_session
from .._transport.connection import Connection
from .._transport.frame_reader import frame_bound
from .._transport.link import Link
from .._transport.netpath import PathCheck
from .._transport.sender import Sender
from ..sdnotify import NotifySocket, SystemdNotifier
from . import stop_sequence
from .clock_jumps import pause_threshold
from .connection_log import ConnectionLog
from .receiver import FrameReceiver
from .reconnect import Decision, ReconnectPolicy
from .recycle import Recycler
from .timers import Alarm, Timers
from .watchdog import TICK as WATCHDOG_TICK, Watchdog

__all__ = ["Node", "NodeLog"]

logger = logging.getLogger("octohub_sync")

#: What a probe asks the hub to answer with (watchdog.py): a ping frame's payload, or a JSON ping's request_id.
PROBE_PAYLOAD = b"octohub-probe"


class NodeLog(logging.LoggerAdapter):
    """Puts the node's pc_id in front of every line (several nodes may share a log)."""

    extra: Mapping[str, object]  # always given (the pc_id), never None

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        # The pc_id as a field too, for the JSON lines (OCTOHUB_LOG_FORMAT=json: _ops/log_format.py).
        extra = kwargs.get("extra")
        kwargs["extra"] = self.extra if not extra else {**self.extra, **extra}
        return f"[{self.extra['pc_id']}] {msg}", kwargs


class Node:
    """Every part of one node, and the callbacks that join them.

    Args:
        settings: the node's settings (validated; the key present).
        systemd_notify: where to tell systemd about readiness, liveness and stopping, or None.
        stop: the facade's stop(), run on a thread of its own when the node recycles itself.
    """

    def __init__(self, settings: Settings, *, systemd_notify: Optional[NotifySocket],
                 stop: Callable[[], Any]) -> None:
        require_key(settings)
        log_context.install()  # the task's fields on every record of the process (_execution/log_context.py)
        self.settings = settings
        #: Where the pc_id came from (_config/identity.py): set, kept in the state directory, or derived.
        self.identity = resolve_pc_id(pc_id=settings.pc_id, instance=settings.instance,
                                      state_dir=settings.state_dir, log=logger)
        self.pc_id = self.identity.value
        self.log = NodeLog(logger, {"pc_id": self.pc_id})
        #: The node's state: _ops/node_state.py alone changes it, on this class's calls.
        self.status = NodeStatus()
        self.counters = Stats(self.status)
        #: The current connection: the watchdog attaches each attempt, the delivery says when it is ready.
        self.link = Link()
        self.store: MemoryStore = (
            MemoryStore() if settings.state_dir is None or settings.state_dir == "off" else
            Ledger(settings.state_dir, self.pc_id, cache_size=settings.result_cache_size, stats=self.counters,
                   log=self.log, max_result_bytes=settings.max_result_bytes))
        #: A path silent this long (no pong of any kind, or no confirmation while they are due) is dead.
        self.dead_after = settings.ping_interval + settings.ping_timeout + 1.0
        # Writes the liveness loops must not wait for (_transport/sender.py): started and stopped with the node.
        self.sender = Sender(log=self.log)
        # Wakes an idle node's timers loop when work arrives (timers.py).
        self.alarm = Alarm()
        self.delivery = ResultDelivery(outbox_size=settings.outbox_size, store=self.store, stats=self.counters,
                                       log=self.log, post=self.sender.post,
                                       confirm_deadline=self.dead_after, link=self.link, wake=self.alarm.ring)
        #: Every accepted task, from admission to its answer: deadlines, cancel flags, the grace.
        self.tasks = TaskRegistry(cancel_grace=settings.cancel_grace)
        self.task_board = TaskBoard(
            send=self.delivery.send_progress, connected=lambda: self.link.ready,
            progress_interval=settings.progress_interval, tasks=self.tasks, log=self.log)
        self._stop = stop
        self.recycler = Recycler(max_tasks=settings.max_tasks, max_memory=settings.max_memory,
                                 max_uptime=settings.max_uptime, close=lambda: self.runner.stop_accepting(),
                                 on_recycle=self._recycle, log=self.log)
        #: Resources handlers use (register_resource): made on the worker that uses them, torn down there.
        self.resources = ResourceRegistry()
        self.runner = TaskRunner(
            deliver=self.delivery.deliver, stats=self.counters, max_workers=settings.max_workers,
            max_pending=settings.max_pending, task_timeout=settings.task_timeout,
            cache_size=settings.result_cache_size, max_result_bytes=settings.max_result_bytes,
            store=self.store, log=self.log, call=self.task_board.call, max_tasks=settings.max_tasks,
            on_max_tasks=self.recycler.tasks_reached, tasks=self.tasks,
            log_errors=settings.log_task_errors, on_thread_exit=self.resources.release_thread)
        self.receiver = FrameReceiver(
            pc_id=self.pc_id, max_message_bytes=settings.max_message_bytes, capacity=settings.max_workers,
            delivery=self.delivery, submit=self._submit, refuse_unread=self.runner.refuse_unread,
            cancel=self.runner.cancel, task_types=lambda: sorted(self.runner.handlers), on_notice=self._hub_notice,
            stats=self.counters, log=self.log, on_ready=self._ready_for_tasks)
        self._ssl = ssl_context(settings) if settings.ws_scheme == "wss" else None
        self._http = deadline_session()  # its sockets are cut with each attempt's deadline
        self.finished = threading.Event()
        self.stopped_clean = True  # what the last stop() returned, for a second call
        self.lifecycle = threading.Lock()
        self.watchdog: Optional[Watchdog] = None
        self._guarded = False  # this node holds the process's tree guard (_platform/node_guard.py)
        self._timers: Optional[Timers] = None
        self._metrics: Any = None
        self._connection_log = ConnectionLog(pc_id=self.pc_id, stats=self.counters, log=self.log)
        # The loops whose ticks make the node alive (_ops/liveness.py): /livez and systemd's watchdog.
        self.beats = Heartbeats(("octohub-watchdog", "octohub-timers"))
        # The watchdog loop's longest sleep: systemd's watchdog pings go out on its ticks.
        systemd_interval = None if systemd_notify is None else systemd_notify.watchdog_interval
        self._watchdog_tick_max = min(WATCHDOG_TICK, systemd_interval or WATCHDOG_TICK)
        self._notifier = None if systemd_notify is None else SystemdNotifier(
            send=systemd_notify.send, alive=self.liveness, stats=self.stats,
            watchdog_interval=systemd_notify.watchdog_interval, log=self.log)

    # -- start and stop (the facade holds ``lifecycle`` around both) ------------------------------

    def start(self, *, tasks: Callable[[], list[dict[str, Any]]],
              waiting: Callable[[], list[dict[str, Any]]]) -> None:
        """Open the store, serve metrics if asked, start the pool and the loops; ``tasks`` and
        ``waiting`` are what ``/tasks`` shows."""
        snapshot = self.store.open()  # a ledger held by another process fails here, before anything runs
        self.runner.restore(snapshot.finished, snapshot.started)
        self.delivery.restore(snapshot.pending)
        s = self.settings
        if s.metrics_port:
            from .._ops.status_server import MetricsServer  # only nodes that serve metrics pay for it
            metrics = MetricsServer(stats=self.stats, failed=lambda: self.status.failure is not None,
                                    host=s.metrics_host, port=s.metrics_port, log=self.log,
                                    alive=self.liveness, ready=self.readiness, tasks=tasks, waiting=waiting)
            try:
                metrics.start()  # a port in use fails here, before anything else has started
            except BaseException:
                self.store.close()
                raise
            self._metrics = metrics
        if s.connect_mode == "api":  # in direct mode, the first address is judged as it is made
            self._connection_log.address(s.api_base)
        self.finished.clear()
        self.status.starting()
        self.beats.reset(time.monotonic())
        self.recycler.started(time.monotonic())
        self.runner.start()
        if self.resources.specs:  # what handlers start on threads ends with the node, even a killed one
            node_guard.acquire()
            self._guarded = True
        self.sender.start()
        self._timers = Timers(expire=self.runner.expire, status=self.log_status, status_interval=s.status_interval,
                              log=self.log, tasks=self.task_board.tick, post=self.sender.post,
                              busy=lambda: bool(self.tasks.runs) or self.delivery.busy(),
                              writes=(self.delivery.tick, self.task_board.send_progress),
                              keep_alive_due=self._keep_alive_due, keep_alive=self._keep_alive,
                              on_tick=functools.partial(self.beats.beat, "octohub-timers"), alarm=self.alarm)
        self._timers.start()
        policy = ReconnectPolicy.from_settings(s)
        if snapshot.unclean and s.hub_read_timeout:
            # The last process never stopped: a connection it had may still be open at the hub.
            self.log.info("the last run of this node ended without stopping (its ledger was not closed): "
                          "re-registering once the hub has cleaned up a connection it may have left "
                          "(OCTOHUB_HUB_READ_TIMEOUT=%g s)", s.hub_read_timeout)
            policy = policy.abandoned(time.monotonic())
        self.watchdog = Watchdog(
            connect=self._new_connection, policy=policy,
            dead_after=self.dead_after, on_ended=self._connection_ended,
            on_reregister=lambda: self.counters.incr("reregistrations"), log=self.log,
            on_tick=self._watchdog_tick, pause_after=pause_threshold(s.ping_interval),
            on_pause=lambda pause: self.counters.incr("pauses"), link=self.link,
            path=PathCheck(probe=self._probe, log=self.log),
            tick=self._watchdog_tick_max)
        self.watchdog.start()

    def stop(self, watchdog: Watchdog, limit: float) -> bool:
        """The stop sequence (stop_sequence.py says why in this order); True if clean."""
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
            "stop the send thread": lambda: self.sender.stop(timeout=wait),
            "close the connection": lambda: watchdog.stop(timeout=wait),
            "stop message handlers": self.receiver.close,
            "close the store": self.store.close,
            "stop the metrics server": self._stop_metrics,
        }, self.log)
        clean = stop_sequence.outcome(
            unfinished=unfinished, overdue=[tid for tid in self.tasks.overdue() if tid not in unfinished],
            turned_away=len(self.runner.turned_away(self.delivery.unsent())), unsent=self.delivery.waiting(),
            kept=self.settings.state_dir not in (None, "off"), log=self.log)
        if self._guarded:
            self._guarded = False
            node_guard.release()
        self.status.stopped()
        self.stopped_clean = clean
        self.finished.set()
        self._http.close()  # pooled API connections (to the hub, or to a proxy); a restart opens new ones
        return clean

    def _say_stopping(self) -> None:
        if self._notifier is not None:
            self._notifier.stopping()
        self.status.stopping()

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

    # -- what the node says about itself ---------------------------------------------------------

    def liveness(self) -> Verdict:
        return liveness(self.status.state, self.beats.ages(time.monotonic()))

    def readiness(self) -> Verdict:
        conn = self.link.conn
        now = time.monotonic()
        heard = max(self.receiver.last_frame, conn.last_pong if conn is not None else 0.0)
        attempt = None
        if conn is not None and conn.deadline is not None and conn.deadline.connecting:
            attempt = Attempt(conn.number, now - conn.deadline.started, conn.deadline.seconds)
        return readiness(self.status.state, ready=self.link.ready, silent_for=now - heard if heard else None,
                         ping_interval=self.settings.ping_interval, attempt=attempt)

    def stats(self) -> dict[str, Any]:
        snap = self.counters.snapshot()
        running, queued = self.tasks.counts()
        by_type: dict[str, int] = {}
        for task_type, _, ids in self.runner.waiting():
            by_type[task_type] = by_type.get(task_type, 0) + len(ids)
        snap.update(pc_id=self.pc_id, tasks_running=running, tasks_queued=queued, outbox=self.delivery.waiting(),
                    results_unconfirmed=self.delivery.unconfirmed(),
                    oldest_task_age=round(self.tasks.oldest_age(), 3),
                    tasks_waiting=sum(by_type.values()), waiting_by_type=by_type, recycle=self.recycler.reason)
        snap["isolation"] = isolation_view(self.runner.handlers)  # children per isolated type
        snap["resources"] = self.resources.view()  # live, made, torn down per resource name
        return snap

    def log_status(self) -> None:
        s = self.stats()
        self.log.info(
            "status: %s, tasks received %d, completed %d, failed %d, rejected %d, timed out %d, cancelled %d, "
            "running %d (longest %.0f s), queued %d (waiting for a limit %d), outbox %d, reconnects %d", s["state"],
            s["tasks_received"], s["tasks_completed"], s["tasks_failed"], s["tasks_rejected"], s["tasks_timed_out"],
            s["tasks_cancelled"], s["tasks_running"], s["oldest_task_age"], s["tasks_queued"], s["tasks_waiting"],
            s["outbox"], s["reconnects"])

    # -- called by the watchdog ------------------------------------------------------------------

    def _watchdog_tick(self, now: float, until: float) -> None:
        self.beats.beat("octohub-watchdog", now, until)
        if self.recycler.watches:
            self.recycler.tick(now)
        if self._notifier is not None:
            self._notifier.tick(now)

    def _recycle(self, reason: str) -> None:
        # Called on the watchdog thread or holding the runner's lock (OCTOHUB_MAX_TASKS): stop() joins
        # the watchdog and takes that lock, so another thread stops the node. Not a daemon: it finishes
        # the drain and the sending of results, which is the point of recycling. The node is stopping
        # from this moment (it refuses tasks), not from when that thread gets going.
        self.status.stopping()
        threading.Thread(target=self._stop, name="octohub-recycle").start()

    def _new_connection(self, number: int) -> Connection:
        """Connection attempt ``number``, not yet started."""
        return Connection(
            self._address, number=number, on_open=self._opened, on_frame=self.receiver.frame,
            on_closed=self._closed, on_pong=self.delivery.pong, ssl_context=self._ssl,
            route=self.settings.route, connect_timeout=self.settings.connect_timeout,
            ping_interval=self.settings.ping_interval, post=self.sender.post,
            max_frame_bytes=frame_bound(self.settings.max_message_bytes))

    def _opened(self, conn: Connection) -> None:
        self._connection_log.opened(conn)
        self.alarm.ring()  # its keep-alive is due an interval from now: an idle timers loop plans for it

    def _submit(self, task: Any) -> None:
        self.runner.submit(task)
        self.alarm.ring()  # after the task is in the registry: an idle timers loop starts ticking for it

    def _address(self) -> str:
        address = resolve_address(self.settings, self.pc_id, self._http, self.log)
        self._connection_log.address(address.url)
        if address.skew is not None:
            self.counters.clock_skew = address.skew
        if self.settings.tls_insecure:
            self.log.warning("TLS certificate checks are OFF (OCTOHUB_TLS_INSECURE): anyone on the path can "
                             "read the key's signatures and the tasks")
        return address.url

    def _connection_ended(self, conn: Connection, decision: Decision) -> None:
        self._connection_log.ended(conn, decision)
        if decision.delay is None:
            self.status.gave_up(decision.give_up)  # run_forever() and wait_stopped() see it
        else:
            self.status.lost()

    # -- called on the send thread ---------------------------------------------------------------

    def _keep_alive_due(self) -> Optional[float]:
        conn = self.link.conn
        return None if conn is None else conn.keep_alive_due()

    def _probe(self, conn: Connection) -> None:
        """(The watchdog.) Ask the hub for an answer on ``conn`` now, on the send thread."""
        self.sender.post(functools.partial(self._send_probe, conn))

    def _send_probe(self, conn: Connection) -> None:
        try:
            conn.ping(PROBE_PAYLOAD)
        except Exception as exc:  # like any failed send: the session is over
            self.log.info("probe failed (%s: %s); dropping the connection", type(exc).__name__, exc)
            conn.abort()

    def _keep_alive(self) -> None:
        """A keep-alive at least every OCTOHUB_PING_INTERVAL on the current connection (_transport/connection.py)."""
        conn = self.link.conn
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
        if self.watchdog is not None:
            self.watchdog.wake()

    def _ready_for_tasks(self) -> None:
        self.status.ready()
        if self._notifier is not None:
            self._notifier.ready()

    def _hub_notice(self, replaced: bool) -> None:
        watchdog = self.watchdog
        if watchdog is not None:
            if replaced:
                watchdog.replaced()
            watchdog.wake()
