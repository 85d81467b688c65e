"""``/livez``, ``/readyz``, ``/healthz``, ``/metrics`` and ``/tasks`` of a running node, on the standard library's HTTP server.

Started by :meth:`NodeWebSocketClient.start` when ``OCTOHUB_METRICS_PORT`` is set.
``/livez`` and ``/readyz`` answer what :mod:`~octohub_sync._ops.liveness` decides (alive: the process
works, whatever the hub does; ready: it can take tasks now); ``/healthz`` is kept as it was.
``/metrics`` is the Prometheus text exposition format 0.0.4, written by hand: it is
a few lines of text, and writing it keeps ``prometheus_client`` an optional dependency.

Why one module: one small HTTP server and the five pages it serves; the Prometheus text is most of
the lines, and it is one function per family of metrics.
"""
from __future__ import annotations

import io
import itertools
import json
import logging
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

from .._version import __version__
from .._wire.addresses import host_for_url
from .._wire.signing import redact
from ..exceptions import ConfigError
from .liveness import Verdict
from .stats import COUNTERS, NodeState
from .status_guard import DeadlineReader, Slots, allowed_host

__all__ = ["MetricsServer", "health", "probe", "render_metrics"]

TaskList = Callable[[], Sequence[Mapping[str, Any]]]

logger = logging.getLogger(__name__)


#: Seconds a client may take to send its whole request, and then to read the answer: a stuck
#: scraper must not hold a thread.
REQUEST_TIMEOUT = 5.0

#: The answer to a connection beyond the cap while every slot is answering (metrics_guard.Slots).
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 5\r\n\r\nbusy\n")

#: Seconds stop() waits for the server thread.
STOP_TIMEOUT = 5.0

_HEALTHY = {s.value for s in NodeState if s.healthy}

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COUNTER_HELP = {
    "tasks_received": "Task messages received from the hub.",
    "tasks_completed": "Tasks whose handler returned a result.",
    "tasks_failed": "Tasks whose handler raised or returned something that is not JSON.",
    "tasks_rejected": "Tasks refused without running (busy, unknown type, shutting down).",
    "tasks_timed_out": "Tasks answered failed because they exceeded their time limit.",
    "tasks_cancelled": "Tasks the hub cancelled (task_cancel) while they were queued or running.",
    "tasks_duplicate": "Task ids received again (running or already answered).",
    "bad_frames": "Frames from the hub that could not be handled.",
    "results_dropped": "Results dropped because the outbox was full.",
    "results_resent": "Results sent again because the hub never confirmed reading them before the connection ended.",
    "reconnects": "Connections opened after the first attempt (each one a reconnection).",
    "connect_failures": "Connection attempts that never opened.",
    "ledger_errors": "Writes to the on-disk ledger that failed (disk full, I/O error); results stayed in memory.",
    "reregistrations": "Connections closed and opened again so that the hub cannot forget this node (OCTOHUB_HUB_READ_TIMEOUT).",
    "pauses": "Pauses of the process or suspends of the machine longer than the keep-alive interval, each ending the connection.",
}

_GAUGES = (
    # (metric name, stats() key, help)
    ("tasks_running", "tasks_running", "Task handlers running now."),
    ("tasks_queued", "tasks_queued", "Tasks waiting for a worker (or for a limit of their type)."),
    ("tasks_waiting", "tasks_waiting", "Of the queued tasks, those held back by their type's concurrency or rate."),
    ("outbox", "outbox", "Results waiting to be sent (kept while disconnected)."),
    ("results_unconfirmed", "results_unconfirmed", "Results sent that the hub has not yet confirmed reading."),
    ("oldest_task_seconds", "oldest_task_age", "Seconds the longest-running task has been running (0: none runs)."),
)


def health(stats: Mapping[str, Any], failed: bool = False) -> tuple[int, dict[str, Any]]:
    """The ``/healthz`` answer for a ``stats()`` snapshot.

    Args:
        stats: what :meth:`NodeWebSocketClient.stats` returned.
        failed: the node gave up reconnecting (``client.failure`` is set).

    Returns:
        HTTP status (200 or 503) and the JSON body.
    """
    state = stats.get("state")
    ok = state in _HEALTHY and not failed
    body = {
        "status": "ok" if ok else "unavailable",
        "state": state,
        "pc_id": stats.get("pc_id"),
        "connected": state == NodeState.CONNECTED.value,
        "connected_since": stats.get("connected_since"),
        "tasks_running": stats.get("tasks_running"),
        "tasks_queued": stats.get("tasks_queued"),
        "tasks_waiting": stats.get("tasks_waiting"),
        "recycle": stats.get("recycle"),
        "outbox": stats.get("outbox"),
        "last_error": redact(str(stats["last_error"])) if stats.get("last_error") else None,
    }
    return (200 if ok else 503), body


def probe(verdict: Verdict, stats: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """The ``/livez`` or ``/readyz`` answer: 200 or 503, with the reason, state and pc_id."""
    body = {"status": "ok" if verdict.ok else "unavailable", "reason": verdict.reason,
            "state": stats.get("state"), "pc_id": stats.get("pc_id")}
    return (200 if verdict.ok else 503), body


def render_metrics(stats: Mapping[str, Any]) -> str:
    """A ``stats()`` snapshot in the Prometheus text format 0.0.4, every series labelled ``pc_id``."""
    label = f'pc_id="{escape_label(str(stats.get("pc_id", "")))}"'
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {escape_help(help_text)}")
        lines.append(f"# TYPE {name} {kind}")

    for key in COUNTERS:
        if key in stats:
            name = f"octohub_node_{key}_total"
            family(name, "counter", _COUNTER_HELP.get(key, key.replace("_", " ") + "."))
            lines.append(f"{name}{{{label}}} {_number(stats[key])}")
    for metric, key, help_text in _GAUGES:
        if key in stats:
            family(f"octohub_node_{metric}", "gauge", help_text)
            lines.append(f"octohub_node_{metric}{{{label}}} {_number(stats[key])}")
    _limit_families(stats, label, lines, family)
    state = stats.get("state")
    family("octohub_node_connected", "gauge", "1 while connected and ready for tasks, else 0.")
    lines.append(f"octohub_node_connected{{{label}}} {int(state == NodeState.CONNECTED.value)}")
    family("octohub_node_connected_since_seconds", "gauge",
           "Unix time the current connection became ready; 0 while not connected.")
    lines.append(f"octohub_node_connected_since_seconds{{{label}}} {_number(stats.get('connected_since') or 0)}")
    family("octohub_node_state", "gauge", "1 for the node's current state, 0 for the others.")
    # Every state, so that each series exists from the start.
    names = [s.value for s in NodeState]
    for name in names + ([state] if state not in names and state else []):
        lines.append(f'octohub_node_state{{{label},state="{escape_label(str(name))}"}} {int(name == state)}')
    if stats.get("clock_skew") is not None:
        family("octohub_node_clock_skew_seconds", "gauge",
               "Hub clock minus this machine's clock, from the API's Date header.")
        lines.append(f"octohub_node_clock_skew_seconds{{{label}}} {_number(stats['clock_skew'])}")
    _per_name(_CHILD_SERIES, "task_type", stats.get("isolation") or {}, label, family, lines)
    _per_name(_RESOURCE_SERIES, "resource", stats.get("resources") or {}, label, family, lines)
    family("octohub_node_info", "gauge", "Always 1; the labels describe the node.")
    lines.append(f'octohub_node_info{{{label},version="{escape_label(__version__)}"}} 1')
    return "\n".join(lines) + "\n"


#: The children of ``isolation="process"`` task types: (metric, kind, key of the type's view, help).
_CHILD_SERIES = (
    ("octohub_node_children_alive", "gauge", "alive", "Child processes of the task type alive now (idle or busy)."),
    ("octohub_node_children_busy", "gauge", "busy", "Child processes of the task type running a task now."),
    ("octohub_node_children_started_total", "counter", "started", "Child processes started for the task type."),
    ("octohub_node_child_crashes_total", "counter", "crashes",
     "Child processes of the task type that died (segfault, exit, killed from outside): WorkerCrashed."),
    ("octohub_node_child_recycles_total", "counter", "recycled",
     "Child processes replaced after max_tasks_per_child tasks or above max_memory_per_child."),
    ("octohub_node_child_kills_total", "counter", "killed",
     "Child processes the node killed to stop a cancelled or timed-out task (OCTOHUB_CANCEL_GRACE)."),
)


def _per_name(series: tuple, label_name: str, views: Mapping[str, Mapping[str, int]], label: str,
              family: Callable[[str, str, str], None], lines: list[str]) -> None:
    """One series per name of ``views`` (a task type, a resource) for each of ``series`` (none without views)."""
    for metric, kind, key, help_text in series if views else ():
        family(metric, kind, help_text)
        for name, view in sorted(views.items()):
            lines.append(f'{metric}{{{label},{label_name}="{escape_label(name)}"}} {_number(view.get(key, 0))}')


#: Resources (register_resource): (metric, kind, key of the resource's view, help).
_RESOURCE_SERIES = (
    ("octohub_node_resources_live", "gauge", "live", "Resources alive now, on worker threads and in child processes."),
    ("octohub_node_resources_made_total", "counter", "made", "Resources made (setups that succeeded)."),
    ("octohub_node_resources_torn_down_total", "counter", "torn_down",
     "Resources torn down (stop, max_uses, max_age, ResourceBroken) or ended with their child process."),
)


def _limit_families(stats: Mapping[str, Any], label: str, lines: list[str], family: Callable[[str, str, str], None]) -> None:
    """Waiting tasks per type (not per key: key values are accounts, too many series) and the recycle."""
    by_type = stats.get("waiting_by_type")
    if by_type:
        family("octohub_node_tasks_waiting_by_type", "gauge",
               "Tasks of a type held back by its concurrency or rate, over all its key values.")
        for task_type, count in sorted(by_type.items()):
            lines.append(f'octohub_node_tasks_waiting_by_type{{{label},task_type="{escape_label(task_type)}"}} {count}')
    if "recycle" in stats:
        reason = stats.get("recycle")
        family("octohub_node_recycling", "gauge",
               "1 once the node recycles itself (OCTOHUB_MAX_TASKS, _MAX_MEMORY, _MAX_UPTIME), with the limit reached.")
        limit = escape_label(reason.split(":", 1)[0]) if reason else ""
        lines.append(f'octohub_node_recycling{{{label},limit="{limit}"}} {int(reason is not None)}')


def escape_label(value: str) -> str:
    """Escape a label value: backslash, double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """Escape ``# HELP`` text: backslash and line feed."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class MetricsServer:
    """Serves ``/livez``, ``/readyz``, ``/healthz``, ``/metrics`` and ``/tasks`` for one node on a named thread.

    Args:
        stats: returns the node's ``stats()`` snapshot.
        failed: whether the node gave up reconnecting.
        alive, ready: the node's liveness and readiness (``/livez``, ``/readyz``; without them, 404).
        tasks: returns the node's ``running_tasks()`` (``/tasks``); none by default.
        waiting: returns the node's ``waiting_tasks()`` (``/tasks`` too): tasks held back by a limit.
        host: address to bind (``OCTOHUB_METRICS_HOST``; keep it on loopback unless a
            scraper on another machine needs it: the pages are not authenticated).
        port: port to bind; 0 picks a free one (see :attr:`port`).
    """

    def __init__(self, *, stats: Callable[[], Mapping[str, Any]], failed: Callable[[], bool], host: str, port: int,
                 log: logging.LoggerAdapter, alive: Optional[Callable[[], Verdict]] = None,
                 ready: Optional[Callable[[], Verdict]] = None, tasks: Optional[TaskList] = None,
                 waiting: Optional[TaskList] = None) -> None:
        self._pages = _Pages(stats, failed, alive, ready, tasks or list, waiting or list)
        self._log = log
        self.host = host
        #: The bound port, once :meth:`start` returned.
        self.port = port
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Bind and start serving; returns at once.

        Raises:
            ConfigError: the address cannot be bound (port in use, unknown host).
        """
        try:
            self._server = _Server(self._pages, self.host, self.port)
        except OSError as exc:
            raise ConfigError("OCTOHUB_METRICS_PORT", self.port, f"cannot listen on {self.host}: {exc}") from None
        self.port = int(self._server.server_address[1])
        # Daemon: a metrics page must never keep the process alive; stop() joins the thread.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.25},
                                        name="octohub-metrics", daemon=True)
        self._thread.start()
        self._log.info("serving /livez, /readyz, /healthz, /metrics and /tasks on http://%s:%d",
                       host_for_url(self.host), self.port)

    def stop(self) -> None:
        """Stop serving and join the thread. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # returns once serve_forever() has left its loop
        server.server_close()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)


class _Pages(NamedTuple):
    """What the pages show: the node's stats, whether it gave up, is alive and ready, its running tasks."""

    stats: Callable[[], Mapping[str, Any]]
    failed: Callable[[], bool]
    alive: Optional[Callable[[], Verdict]]
    ready: Optional[Callable[[], Verdict]]
    tasks: TaskList
    waiting: TaskList


class _Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer with named daemon request threads, IPv6-capable, a few connections at once."""

    daemon_threads = True
    allow_reuse_address = True
    # A burst of connections waits in the kernel, not refused, while the loop drops the idle ones.
    request_queue_size = 1024

    def __init__(self, pages: _Pages, host: str, port: int) -> None:
        self.pages = pages
        self.bind_host = host
        self.machine = socket.gethostname()  # a scraper on another machine may name this one
        self.slots = Slots()
        self._ids = itertools.count(1)
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host.strip("[]"), port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.take(request):
            self._turn_away(request)
            return
        # Daemon: one slow scraper must not hold the process open; each request is short.
        thread = threading.Thread(target=self._serve, args=(request, client_address),
                                  name=f"octohub-metrics-req-{next(self._ids)}", daemon=True)
        thread.start()

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self.slots.release(request)

    def _turn_away(self, request: socket.socket) -> None:
        try:
            request.setblocking(False)  # a few bytes into an empty buffer; never wait for this client
            request.send(_BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("metrics request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "octohub-node"
    timeout = REQUEST_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the socket's own reader: unused, and it would keep the descriptor open
        self.rfile = io.BufferedReader(DeadlineReader(self.connection, REQUEST_TIMEOUT))

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        self.server.slots.answering(self.connection)
        self.connection.settimeout(self.timeout)  # the answer gets its own time (sendall: for the whole write)
        return True

    def do_GET(self) -> None:
        if not allowed_host(self.headers.get_all("Host"), self.server.bind_host, self.server.machine):
            # DNS rebinding: a web page whose name now points at 127.0.0.1 must not read /tasks.
            logger.debug("metrics %s: refused Host %r", self.client_address[0], self.headers.get("Host"))
            self._reply(403, "text/plain; charset=utf-8", "forbidden: the Host header names neither this "
                        "machine's loopback nor the address the metrics server is bound to\n")
            return
        path = self.path.split("?", 1)[0]
        pages = self.server.pages
        if path == "/healthz":
            status, body = health(pages.stats(), failed=pages.failed())
            self._reply(status, "application/json", json.dumps(body, ensure_ascii=False) + "\n")
        elif path == "/metrics":
            self._reply(200, CONTENT_TYPE, render_metrics(pages.stats()))
        elif path == "/livez" and pages.alive is not None:
            self._probe(pages.alive(), pages.stats())
        elif path == "/readyz" and pages.ready is not None:
            self._probe(pages.ready(), pages.stats())
        elif path == "/tasks":
            stats = pages.stats()
            body = {"pc_id": stats.get("pc_id"), "tasks": pages.tasks(), "waiting": pages.waiting(),
                    "resources": stats.get("resources") or {}}
            self._reply(200, "application/json", json.dumps(body, ensure_ascii=False) + "\n")
        else:
            self._reply(404, "text/plain; charset=utf-8", "not found: try /livez, /readyz, /healthz, /metrics or /tasks\n")

    def _probe(self, verdict: Verdict, stats: Mapping[str, Any]) -> None:
        status, body = probe(verdict, stats)
        self._reply(status, "application/json", json.dumps(body, ensure_ascii=False) + "\n")

    def _reply(self, status: int, content_type: str, text: str) -> None:
        payload = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # http.server writes every request to stderr; a library must not.
        logger.debug("metrics %s: %s", self.client_address[0], format % args)
