"""Frames from the hub, carried out: replies, the handshake, tasks to the runner, message handlers.

Runs on the connection thread. Each frame becomes a :class:`~octohub_sync._node.dispatch.Plan`
(a pure decision, see dispatch.py); this module only carries it out, and never
waits for a handler.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Optional

from .._delivery.delivery import ResultDelivery
from .._ops.stats import Stats
from .._transport.connection import Connection
from .._wire import protocol
from .._wire.protocol import Task
from ..exceptions import ProtocolError
from .dispatch import Plan, dispatch

__all__ = ["FrameReceiver", "MessageHandler"]

MessageHandler = Callable[[Mapping[str, Any]], Any]


class FrameReceiver:
    """Carries out what the hub's frames ask.

    Args:
        delivery: sends replies and ``node_ready`` on the current connection.
        submit / refuse_unread: hand a task to the runner, or have one that cannot be read answered ``failed``.
        cancel: hand the runner a ``task_cancel`` (task_id, reason).
        task_types: the task types the node handles now (for ``node_ready``).
        capacity: tasks the node runs at once (for ``node_ready``).
        on_notice: called with ``replaced`` when the hub announces it is closing the connection.
        on_ready: called after each ``node_ready`` went out (the node is ready for tasks: it says so).
    """

    def __init__(
        self,
        *,
        pc_id: str,
        max_message_bytes: int,
        capacity: int,
        delivery: ResultDelivery,
        submit: Callable[[Task], None],
        refuse_unread: Callable[[str, str], None],
        cancel: Callable[[str, Optional[str]], None],
        task_types: Callable[[], list[str]],
        on_notice: Callable[[bool], None],
        stats: Stats,
        log: logging.LoggerAdapter,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        self._pc_id = pc_id
        self._on_ready = on_ready
        #: When the last frame arrived (``time.monotonic()``; 0.0: none yet), for readiness.
        self.last_frame = 0.0
        self._max_bytes = max_message_bytes
        self._capacity = capacity
        self._delivery = delivery
        self._submit = submit
        self._refuse_unread = refuse_unread
        self._cancel = cancel
        self._task_types = task_types
        self._on_notice = on_notice
        self._stats = stats
        self._log = log
        self.message_handlers: dict[str, MessageHandler] = {}
        self._message_pool: Optional[ThreadPoolExecutor] = None

    def frame(self, conn: Connection, frame: "str | bytes", binary: bool) -> None:
        """Handle one frame from the hub; never raises and never waits for a handler."""
        self.last_frame = time.monotonic()
        try:
            if binary:
                raise ProtocolError(f"binary frame of {len(frame)} bytes (the protocol uses text frames)")
            plan = dispatch(frame, max_bytes=self._max_bytes, handlers=self.message_handlers)
        except ProtocolError as exc:
            self._stats.incr("bad_frames")
            self._log.warning("skipped a bad frame: %s", exc)
            return
        try:
            self._carry_out(conn, plan)
        except Exception:  # nothing a message does may end the connection thread
            self._stats.incr("bad_frames")
            self._log.exception("could not handle a %r message; skipped", plan.message.kind if plan.message else "task")

    def register_message_handler(self, kind: str, handler: MessageHandler) -> None:
        """Call ``handler(message)`` for the hub's messages of ``kind`` from now on."""
        self.message_handlers[kind] = handler

    def close(self) -> None:
        """Wait for running message handlers and release their thread."""
        if self._message_pool is not None:
            self._message_pool.shutdown(wait=True, cancel_futures=True)
            self._message_pool = None

    def _carry_out(self, conn: Connection, plan: Plan) -> None:
        if plan.log_text and self._log.isEnabledFor(plan.log_level):
            self._log.log(plan.log_level, "%s", plan.log_text)
        if plan.task is not None:
            self._submit(plan.task)
        elif plan.reply is not None:
            self._delivery.reply(conn, plan.reply)
        elif plan.pong is not None:
            conn.heard_pong(plan.pong.encode("utf-8", "replace"))
        elif plan.handshake and plan.message is not None:
            # How the node keeps this connection open and asks for answers depends on the hub's dialect.
            conn.dialect = plan.message.dialect
            self._handshake(conn)
        elif plan.closing is not None:
            self._on_notice(plan.replaced)
        elif plan.handler is not None and plan.message is not None:
            self._run_message_handler(plan.handler, plan.message.body)
        elif plan.unreadable is not None:
            self._refuse_unread(*plan.unreadable)
        elif plan.cancel is not None:
            self._cancel(*plan.cancel)

    def _handshake(self, conn: Connection) -> None:
        ready = protocol.node_ready(self._pc_id, task_types=self._task_types(), capacity=self._capacity)
        if not self._delivery.send_or_abort(conn, ready):
            return
        self._log.info("sent node_ready")
        self._delivery.mark_ready()
        self._on_ready()

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
