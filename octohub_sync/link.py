"""The node's side of the current connection: frames in, replies and results out.

Runs on the connection thread (frames) and on worker threads (results). It
turns each frame into a :class:`~octohub_sync.dispatch.Plan` and carries it
out, and it sends each result at once or keeps it in the outbox until the next
``node_ready``.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Optional

from . import dispatch as routing
from . import protocol
from .config import Settings
from .connection import Connection
from .exceptions import ProtocolError
from .outbox import Outbox
from .runner import TaskRunner
from .stats import Stats

__all__ = ["Link", "MessageHandler"]

MessageHandler = Callable[[Mapping[str, Any]], Any]


class Link:
    """Carries out what the hub's frames ask and delivers results.

    Args:
        on_notice: called with ``replaced`` when the hub announces it is closing the connection.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        pc_id: str,
        stats: Stats,
        log: logging.LoggerAdapter,
        on_notice: Callable[[bool], None],
    ) -> None:
        self._settings = settings
        self._pc_id = pc_id
        self._stats = stats
        self._log = log
        self._on_notice = on_notice
        self.runner: Optional[TaskRunner] = None
        self.message_handlers: dict[str, MessageHandler] = {}
        self.outbox = Outbox(settings.outbox_size)
        self.conn: Optional[Connection] = None
        self.ready = False
        self.connected = threading.Event()
        self._flush_lock = threading.Lock()
        self._message_pool: Optional[ThreadPoolExecutor] = None

    def attach(self, conn: Connection) -> None:
        """Make ``conn`` the current connection (not ready until the hub confirms it)."""
        self.conn = conn

    def detach(self, conn: Connection) -> None:
        """``conn`` ended; results go to the outbox until the next ``node_ready``."""
        if conn is self.conn:
            self.ready = False
            self.connected.clear()

    def close(self) -> None:
        """Wait for running message handlers and release their thread."""
        self.ready = False
        self.connected.clear()
        if self._message_pool is not None:
            self._message_pool.shutdown(wait=True, cancel_futures=True)
            self._message_pool = None

    # -- the connection thread --------------------------------------------------------------------

    def frame(self, conn: Connection, frame: "str | bytes", binary: bool) -> None:
        """Handle one frame from the hub; never raises and never waits for a handler."""
        try:
            if binary:
                raise ProtocolError(f"binary frame of {len(frame)} bytes (the protocol uses text frames)")
            plan = routing.dispatch(frame, max_bytes=self._settings.max_message_bytes,
                                    handlers=self.message_handlers)
        except ProtocolError as exc:
            self._stats.incr("bad_frames")
            self._log.warning("skipped a bad frame: %s", exc)
            return
        try:
            self._carry_out(conn, plan)
        except Exception:  # nothing a message does may end the connection thread
            self._stats.incr("bad_frames")
            self._log.exception("could not handle a %r message; skipped", plan.message.kind if plan.message else "?")

    def _carry_out(self, conn: Connection, plan: routing.Plan) -> None:
        if plan.log_text and self._log.isEnabledFor(plan.log_level):
            self._log.log(plan.log_level, "%s", plan.log_text)
        if plan.task is not None:
            self.runner.submit(plan.task)  # type: ignore[union-attr]
        elif plan.reply is not None:
            self._send_or_abort(conn, plan.reply)
        elif plan.handshake:
            self._handshake(conn)
        elif plan.closing is not None:
            self._on_notice(plan.replaced)
        elif plan.handler is not None:
            self._run_message_handler(plan.handler, plan.message.body)  # type: ignore[union-attr]

    def _handshake(self, conn: Connection) -> None:
        ready = protocol.node_ready(self._pc_id, task_types=sorted(self.runner.handlers),  # type: ignore[union-attr]
                                    capacity=self._settings.max_workers)
        if not self._send_or_abort(conn, ready):
            return
        self.ready = True
        self._stats.state = "connected"
        self._stats.connected_since = time.time()
        self.connected.set()
        self._log.info("sent node_ready")
        self.flush()

    def _send_or_abort(self, conn: Connection, frame: str) -> bool:
        try:
            conn.send(frame)
            return True
        except Exception as exc:  # any send failure means the session is over
            self._log.info("send failed (%s: %s); dropping the connection", type(exc).__name__, exc)
            conn.abort()
            return False

    def _run_message_handler(self, kind: str, message: Mapping[str, Any]) -> None:
        if self._message_pool is None:
            # One thread: message handlers see messages in the order they arrived.
            self._message_pool = ThreadPoolExecutor(1, thread_name_prefix="octohub-message")
        self._message_pool.submit(self._call_message_handler, kind, message)

    def _call_message_handler(self, kind: str, message: Mapping[str, Any]) -> None:
        try:
            self.message_handlers[kind](message)
        except Exception:
            self._log.exception("message handler for %r failed", kind)

    # -- results ----------------------------------------------------------------------------------

    def deliver(self, task_id: str, frame: str) -> None:
        """Send a result now, or keep it in the outbox until the next node_ready."""
        conn = self.conn
        if self.ready and conn is not None and not len(self.outbox) and self._send_or_abort(conn, frame):
            return
        dropped = self.outbox.put(task_id, frame)
        if dropped is not None:
            self._gave_up([dropped])
        if self.ready:
            self.flush()

    def _gave_up(self, task_ids: list[str]) -> None:
        self._stats.incr("results_dropped", len(task_ids))
        self._log.warning("outbox full (OCTOHUB_OUTBOX_SIZE=%d): gave up the result of task(s) %s",
                          self.outbox.capacity, ", ".join(task_ids[:10]))

    def flush(self) -> None:
        """Send what the outbox holds, oldest first, while the connection takes it."""
        with self._flush_lock:
            items = self.outbox.take_all()
            for i, (task_id, frame) in enumerate(items):
                conn = self.conn
                if not self.ready or conn is None or not self._send_or_abort(conn, frame):
                    dropped = self.outbox.put_back(items[i:])
                    if dropped:
                        self._gave_up(dropped)
                    return
            if items:
                self._log.info("sent %d result(s) kept while disconnected", len(items))
