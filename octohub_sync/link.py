"""The node's side of the current connection: frames in, replies and results out.

Runs on the connection thread (frames, pongs) and on worker threads (results).
It turns each frame into a :class:`~octohub_sync.dispatch.Plan` and carries it
out, and it sends each result at once or keeps it in the outbox until the next
``node_ready``.

A result counts as delivered only once the hub has read it: after sending, the
node sends a ping frame, and the hub's pong proves its reader got past every
frame sent before that ping. Results still unconfirmed when the connection
ends go back to the outbox and are sent again after the next ``node_ready``.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
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

#: Payload prefix of the ping frames that confirm delivery; the number is the last result they cover.
ACK_PREFIX = b"octohub-ack:"


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
        # Results sent on the current connection that the hub has not confirmed: (number, task_id, frame).
        self._unconfirmed: deque[tuple[int, str, str]] = deque()
        self._sent = 0                      # results sent on the current connection, numbering them
        self._ack_pending: Optional[int] = None  # number covered by the confirmation ping in flight
        self._ack_lock = threading.Lock()   # guards the four above and ``ready``

    def attach(self, conn: Connection) -> None:
        """Make ``conn`` the current connection (not ready until the hub confirms it)."""
        self.conn = conn

    def detach(self, conn: Connection) -> None:
        """``conn`` ended; results go to the outbox until the next ``node_ready``.

        Results sent on it that the hub never confirmed go back to the outbox, unless our close
        handshake completed: the hub answered our close frame, so it read everything before it.
        """
        if conn is not self.conn:
            return
        with self._ack_lock:
            self.ready = False
            self.connected.clear()
            unconfirmed = [(task_id, frame) for _, task_id, frame in self._unconfirmed]
            self._unconfirmed.clear()
            self._ack_pending = None
        if not unconfirmed or conn.closed_cleanly:
            return
        self._stats.incr("results_resent", len(unconfirmed))
        self._log.info("%d result(s) sent but not confirmed by the hub will be sent again after reconnecting",
                       len(unconfirmed))
        dropped = self.outbox.put_back(unconfirmed)
        if dropped:
            self._dropped(dropped)

    def unconfirmed(self) -> int:
        """How many results were sent on the current connection without the hub's confirmation yet."""
        return len(self._unconfirmed)

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
            self._log.exception("could not handle a %r message; skipped", plan.message.kind if plan.message else "task")

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
        elif plan.refusal is not None:
            self.runner.refuse(*plan.refusal)  # type: ignore[union-attr]

    def _handshake(self, conn: Connection) -> None:
        ready = protocol.node_ready(self._pc_id, task_types=sorted(self.runner.handlers),  # type: ignore[union-attr]
                                    capacity=self._settings.max_workers)
        if not self._send_or_abort(conn, ready):
            return
        with self._ack_lock:
            self.ready = True
            self._sent = 0
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
            self._track(conn, task_id, frame)
            return
        dropped = self.outbox.put(task_id, frame)
        if dropped is not None:
            self._dropped([dropped])
        if self.ready:
            self.flush()

    def _track(self, conn: Connection, task_id: str, frame: str) -> None:
        """Remember a result written to ``conn`` until the hub confirms it; ask for confirmation."""
        with self._ack_lock:
            current = self.ready and conn is self.conn
            if current:
                self._sent += 1
                self._unconfirmed.append((self._sent, task_id, frame))
                ping = self._ack_pending is None
                if ping:
                    self._ack_pending = self._sent
                number = self._sent
        if not current:  # the connection ended while we sent: detach() could not see this result
            dropped = self.outbox.put(task_id, frame)
            if dropped is not None:
                self._dropped([dropped])
        elif ping:
            self._ask_confirmation(conn, number)

    def _ask_confirmation(self, conn: Connection, number: int) -> None:
        try:
            conn.ping(ACK_PREFIX + str(number).encode())
        except Exception as exc:  # like any failed send: the session is over
            self._log.info("ping failed (%s: %s); dropping the connection", type(exc).__name__, exc)
            conn.abort()

    def pong(self, conn: Connection, payload: bytes) -> None:
        """A pong arrived (connection thread): confirm the results its ping covered."""
        if not payload.startswith(ACK_PREFIX):
            return  # a keep-alive pong
        try:
            number = int(payload[len(ACK_PREFIX):])
        except ValueError:
            return
        with self._ack_lock:
            if conn is not self.conn or number != self._ack_pending:
                return
            unconfirmed = self._unconfirmed
            while unconfirmed and unconfirmed[0][0] <= number:
                unconfirmed.popleft()
            self._ack_pending = unconfirmed[-1][0] if unconfirmed else None
            again = self._ack_pending
        if again is not None:
            self._ask_confirmation(conn, again)

    def _dropped(self, task_ids: list[str]) -> None:
        self._stats.incr("results_dropped", len(task_ids))
        self._log.warning("outbox full (OCTOHUB_OUTBOX_SIZE=%d): dropped the result of task(s) %s",
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
                        self._dropped(dropped)
                    return
                self._track(conn, task_id, frame)
            if items:
                self._log.info("sent %d result(s) kept while disconnected", len(items))
