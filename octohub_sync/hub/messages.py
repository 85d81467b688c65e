"""Hub → node messages in the two dialects of docs/protocol.md §3, as plain dicts.

No I/O here: the servers decide *when* to send, this module decides *what*.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Mapping

__all__ = [
    "DIALECTS",
    "GO",
    "REPLACED_REASON",
    "SEED",
    "connected",
    "dumps",
    "kind_of",
    "ping",
    "reply_to",
    "replaced",
    "task",
    "task_cancel",
]

SEED = "seed"
GO = "go"
DIALECTS = (SEED, GO)

def dumps(message: Mapping[str, Any]) -> str:
    """A message as the text of a frame: UTF-8 JSON, as the Go server writes it.

    A lone surrogate (a test may send ``"\\ud800"``) has no UTF-8 form, and websockets could not
    send the frame: such a message is written all ASCII instead, with ``\\u`` escapes.
    """
    text = json.dumps(message, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(message)
    return text


#: Reason the Go server gives when a newer connection with the same pc_id evicts an old one.
REPLACED_REASON = "新连接建立"

#: The only actions the Go server understands from a node; everything else gets error 1002.
_GO_KNOWN_ACTIONS = frozenset({"ping", "pong"})


def kind_of(message: Mapping[str, Any]) -> str:
    """The message kind: ``type``, falling back to ``action`` (empty string if neither)."""
    kind = message.get("type") or message.get("action")
    return kind if isinstance(kind, str) else ""


def connected(dialect: str, pc_id: str, session_id: str, now: float) -> dict[str, Any]:
    """The confirmation sent right after the WebSocket upgrade."""
    fields = {"pc_id": pc_id, "session_id": session_id, "server_time": int(now)}
    if dialect == GO:
        return {"action": "connected", "data": fields, "timestamp": int(now)}
    return {"type": "connected", **fields}


def replaced(dialect: str) -> dict[str, Any]:
    """The notice an old connection gets when a new one with the same pc_id takes over."""
    if dialect == GO:
        return {"action": "disconnected", "data": {"reason": REPLACED_REASON, "code": 1000}, "from": "system"}
    return {
        "type": "disconnect_notification",
        "reason": f"{REPLACED_REASON}: another connection with the same pc_id replaced this one",
    }


def ping(dialect: str) -> tuple[dict[str, Any], str]:
    """A JSON-level ping and its request id (``""`` in the seed dialect, which has none: docs/protocol.md §3.2)."""
    if dialect == GO:
        request_id = uuid.uuid4().hex
        return {"action": "ping", "request_id": request_id}, request_id
    return {"type": "ping"}, ""


def task(
    task_id: str,
    task_type: str,
    data: Any,
    *,
    timeout: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A task message; the Go server has no task form, so both dialects use the seed one (docs/protocol.md §3.2)."""
    message: dict[str, Any] = {
        "type": "task",
        "task_id": task_id,
        "task_type": task_type,
        "data": {} if data is None else data,
    }
    if timeout is not None:
        message["timeout"] = timeout
    if extra:
        message.update(extra)
    return message


def task_cancel(dialect: str, task_id: str, reason: str | None = None) -> dict[str, Any]:
    """A task_cancel message (docs/protocol.md §3.2): seed fields at the top level, Go fields in ``data``."""
    fields: dict[str, Any] = {"task_id": task_id}
    if reason is not None:
        fields["reason"] = reason
    if dialect == GO:
        return {"action": "task_cancel", "data": fields}
    return {"type": "task_cancel", **fields}


def reply_to(dialect: str, message: Mapping[str, Any], now: float) -> dict[str, Any] | None:
    """What the hub answers to a node message, if anything.

    Both hubs answer a JSON ping with a pong. The Go server reads only ``action``
    and answers everything else it does not know -- ``node_ready`` and
    ``task_result`` included -- with error 1002, which nodes must tolerate.
    """
    if dialect == GO:
        action = message.get("action")
        if action == "ping":
            pong = {"action": "pong", "data": {"server_time": int(now)}}
            return {**pong, "request_id": message.get("request_id")}
        if isinstance(action, str) and action in _GO_KNOWN_ACTIONS:
            return None
        details = f"action {action!r} is not supported" if action else "message has no action field"
        return {"action": "error", "data": {"code": 1002, "message": "unknown action", "details": details}}
    if message.get("type") == "ping":
        return {"type": "pong", "timestamp": int(now)}
    return None
