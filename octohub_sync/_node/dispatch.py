"""Routing: from one hub frame to what the node must do, without touching a socket.

:func:`dispatch` is a pure function so that every kind of message, and every
kind of garbage, can be tested without a connection. The connection thread
only feeds it frames and carries out the :class:`Plan`.
"""
from __future__ import annotations

import logging
from typing import Container, NamedTuple, Optional

from .._wire import protocol
from .._wire.protocol import Message, Task
from ..exceptions import ProtocolError

__all__ = ["Plan", "dispatch"]

#: Disconnect reasons by which a hub says another connection with our pc_id replaced us.
REPLACED_REASONS = ("新连接建立", "new connection", "replaced")

#: Go-server error code for "unknown action": its answer to node_ready and task_result.
UNKNOWN_ACTION = 1002


class Plan(NamedTuple):
    """What to do about one frame. Unset fields mean "nothing".

    A named tuple, not a dataclass: one is built per frame, and a tuple is the cheapest to build.
    """

    message: Optional[Message] = None
    reply: Optional[str] = None
    task: Optional[Task] = None
    handshake: bool = False
    closing: Optional[str] = None
    replaced: bool = False
    handler: Optional[str] = None
    #: (task_id, error): answer ``failed`` for a task that cannot be read (too large).
    unreadable: Optional[tuple[str, str]] = None
    #: (task_id, reason): the hub cancels that task (docs/protocol.md §3.2, task_cancel).
    cancel: Optional[tuple[str, Optional[str]]] = None
    #: The ``request_id`` of a JSON pong: the answer to a JSON ping of ours (docs/protocol.md §4).
    pong: Optional[str] = None
    log_level: int = logging.DEBUG
    log_text: str = ""


def dispatch(frame: str | bytes, *, max_bytes: int, handlers: Container[str] = ()) -> Plan:
    """Decide what one frame asks of the node.

    Args:
        frame: the text frame as received.
        max_bytes: frames longer than this are refused.
        handlers: kinds that have a registered message handler.

    Raises:
        octohub_sync.exceptions.ProtocolError: the frame is not a usable message
            (the caller logs and counts it).
    """
    try:
        msg = protocol.decode(frame, max_bytes=max_bytes)
    except protocol.FrameTooLarge as exc:
        # The hub waits for an answer to a task it sent; silence would leave it waiting forever.
        task_id = protocol.peek_task_id(frame)
        if task_id is None:
            raise
        return Plan(unreadable=(task_id, f"TaskTooLarge: {exc}"), log_level=logging.WARNING,
                    log_text=f"refused task {task_id[:100]}: {exc}")
    try:
        return _route(msg, handlers)
    except RecursionError:  # str() or json.dumps() of a value json.loads only just managed
        raise ProtocolError("JSON nested too deeply") from None


def _route(msg: Message, handlers: Container[str]) -> Plan:
    kind = msg.kind
    if kind == "task":
        return Plan(message=msg, task=protocol.parse_task(msg))
    if kind == "ping":
        return Plan(message=msg, reply=protocol.pong(msg))
    if kind == "task_cancel":
        task_id, reason = protocol.parse_cancel(msg)
        return Plan(message=msg, cancel=(task_id, reason),
                    log_text=f"hub cancels task {task_id[:100]}" + (f" ({reason})" if reason else ""))
    if kind == "connected":
        session = str(msg.fields.get("session_id"))[:100]
        return Plan(message=msg, handshake=True, log_level=logging.INFO,
                    log_text=f"hub confirmed the connection (session {session})")
    if kind in ("disconnect_notification", "disconnected"):
        return _disconnect(msg)
    if kind == "error":
        return _error(msg)
    if kind == "pong":
        request_id = msg.body.get("request_id")
        return Plan(message=msg, pong=request_id if isinstance(request_id, str) else "")
    if kind in handlers:
        return Plan(message=msg, handler=kind)
    return Plan(message=msg, log_text=f"ignored message of kind {kind[:100]!r} (no handler registered)")


def _disconnect(msg: Message) -> Plan:
    reason = str(msg.fields.get("reason", ""))[:200]
    replaced = any(word in reason for word in REPLACED_REASONS)
    text = f"hub is closing this connection: {reason or 'no reason given'}"
    if replaced:
        text += " - another node with the same pc_id probably connected (set OCTOHUB_PC_ID or OCTOHUB_INSTANCE)"
    return Plan(message=msg, closing=reason or msg.kind, replaced=replaced,
                log_level=logging.WARNING, log_text=text)


def _error(msg: Message) -> Plan:
    code = msg.fields.get("code")
    text = f"hub reported error {str(code)[:20]}: {str(msg.fields.get('message', ''))[:200]}"
    # The Go server answers every node_ready and task_result with 1002; that is expected, not news.
    level = logging.DEBUG if code == UNKNOWN_ACTION else logging.WARNING
    return Plan(message=msg, log_level=level, log_text=text)

