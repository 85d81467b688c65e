"""Wire formats of docs/protocol.md §3: decoding hub frames and encoding node messages.

No sockets here. Both dialects are read: the seed dialect's ``{"type": .., fields..}``
and the Go server's ``{"action": .., "data": {fields..}}``. What the node writes stays within a hub's
message limit: a failed result's error is cut (:func:`task_failed`), a pong's request_id bounded.

Why one module: the messages read and written are one wire format (docs/protocol.md §3); split, the
encoder and the decoder of one message, and the limits both obey, would live apart.
"""
from __future__ import annotations

import json
import math
import re
import time
from enum import Enum
from typing import Any, AnyStr, Mapping, NamedTuple, Optional

from ..exceptions import ProtocolError

__all__ = ["FEATURES", "MAX_FAILED_BYTES", "Dialect", "FrameTooLarge", "Message", "Task", "cut_text", "decode",
           "fit_result", "frame_size", "parse_cancel", "parse_task", "peek_task_id"]

#: Longest task_id accepted; a longer one is treated as unusable rather than cached.
MAX_TASK_ID = 256

#: What the node speaks beyond the seed's messages, listed in ``node_ready`` (docs/protocol.md §3.4).
FEATURES = ("cancel", "progress", "process_isolation", "limits", "rate_limits", "recycle")

#: Longest ``reason`` of a task_cancel, and ``message`` of a task_progress, kept (characters).
MAX_TEXT = 200

#: Largest ``failed`` task_result (bytes on the wire; OCTOHUB_MAX_RESULT_BYTES when smaller): a longer
#: error is cut (:func:`cut_text`), so that no failure can grow past a hub's message limit (docs/protocol.md §6).
MAX_FAILED_BYTES = 16 * 2**10

#: Longest ``request_id`` echoed in a pong (bytes of its JSON form); a longer one is left out.
MAX_REQUEST_ID_BYTES = 1024

# A task_id as a JSON string of at most MAX_TASK_ID characters, and a kind saying "task".
_TASK_ID = r'"task_id"\s*:\s*("(?:[^"\\]|\\.){1,%d}")' % MAX_TASK_ID
_TASK_KIND = r'"(?:type|action)"\s*:\s*"task"'
# The start of a task_result as _dumps writes it, up to its status.
_RESULT_HEAD = re.compile(r'\{"type":"task_result","task_id":"(?:[^"\\]|\\.)*","status":"(\w+)"')
_PEEK_TEXT = (re.compile(_TASK_ID), re.compile(_TASK_KIND))
_PEEK_BYTES = (re.compile(_TASK_ID.encode()), re.compile(_TASK_KIND.encode()))


class FrameTooLarge(ProtocolError):
    """A frame over the size limit: refused without being parsed."""


class Dialect(str, Enum):
    """Which key named the message kind."""

    SEED = "type"
    GO = "action"


class Message(NamedTuple):
    """A decoded hub message.

    Attributes:
        kind: value of ``type`` (or ``action``).
        dialect: which key carried the kind; replies use the same one.
        body: the whole JSON object as received.
        fields: where the fields are: the object itself (seed), or its ``data`` object (Go).
    """

    kind: str
    dialect: Dialect
    body: Mapping[str, Any]
    fields: Mapping[str, Any]


class Task(NamedTuple):
    """A task message that passed validation."""

    task_id: str
    task_type: str
    data: Mapping[str, Any]
    timeout: Optional[float]
    message: Mapping[str, Any]


def decode(frame: str | bytes, *, max_bytes: int) -> Message:
    """Turn one text frame into a :class:`Message`.

    Raises:
        ProtocolError: the frame is too large, not UTF-8, not JSON, not an object,
            or names no kind.
    """
    size = frame_size(frame) if isinstance(frame, str) else len(frame)
    if size > max_bytes:
        raise FrameTooLarge(f"frame of {size} bytes exceeds OCTOHUB_MAX_MESSAGE_BYTES={max_bytes}")
    if isinstance(frame, (bytes, bytearray)):
        try:
            frame = frame.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"text frame is not valid UTF-8 (byte {exc.start})") from None
    try:
        body = json.loads(frame)
    except RecursionError:
        raise ProtocolError("JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON ({exc.msg} at position {exc.pos})") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise ProtocolError(f"unusable JSON ({str(exc)[:100]})") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"JSON {type(body).__name__} instead of an object")
    kind = body.get("type")
    if isinstance(kind, str) and kind:  # the seed dialect: the common case, decided at once
        return Message(kind, Dialect.SEED, body, body)
    dialect = Dialect.SEED
    if not isinstance(kind, str):
        kind, dialect = body.get("action"), Dialect.GO
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("message has no string 'type' or 'action'")
    fields = body
    if dialect is Dialect.GO and isinstance(body.get("data"), dict):
        fields = body["data"]
    return Message(kind=kind, dialect=dialect, body=body, fields=fields)


def peek_task_id(frame: str | bytes) -> Optional[str]:
    """The task_id of a task frame too large to parse, if it can be read without parsing.

    Only an unambiguous answer counts: the frame says it is a task and names exactly one
    task_id (an id also found inside ``data`` could belong to another task).
    """
    literal = _only_task_id(frame, *_PEEK_TEXT) if isinstance(frame, str) else _only_task_id(frame, *_PEEK_BYTES)
    if literal is None:
        return None
    try:
        task_id = json.loads(literal)
    except ValueError:  # e.g. invalid UTF-8 or a bad escape
        return None
    return task_id if isinstance(task_id, str) and task_id else None


def _only_task_id(frame: AnyStr, ids: re.Pattern[AnyStr], kind: re.Pattern[AnyStr]) -> Optional[AnyStr]:
    # The one task_id literal of a frame that says it is a task, else None.
    if not kind.search(frame):
        return None
    found = {m.group(1) for m in ids.finditer(frame)}
    return found.pop() if len(found) == 1 else None


def parse_task(msg: Message) -> Task:
    """Validate a ``task`` message.

    Raises:
        ProtocolError: the task cannot be run (no usable ``task_id``, no ``task_type``,
            ``data`` not an object, bad ``timeout``).
    """
    # The seed dialect has the task at the top level; a Go-style hub wraps it in "data" (docs/protocol.md §3.2).
    body = msg.body if "task_id" in msg.body else msg.fields
    task_id = body.get("task_id")
    if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_TASK_ID:
        raise ProtocolError("task has no usable 'task_id' (a non-empty string of at most 256 characters)")
    task_type = body.get("task_type")
    if not isinstance(task_type, str) or not task_type:
        raise ProtocolError(f"task {task_id!r} has no string 'task_type'")
    data = body.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(f"task {task_id!r}: 'data' is {type(data).__name__}, not an object")
    timeout = body.get("timeout")
    if timeout is not None:
        bad = ProtocolError(f"task {task_id!r}: 'timeout' must be a non-negative number")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise bad
        try:
            timeout = float(timeout)
        except OverflowError:  # a JSON integer too large for a float
            raise bad from None
        if not math.isfinite(timeout) or timeout < 0:
            raise bad
        timeout = timeout or None
    return Task(task_id=task_id, task_type=task_type, data=data, timeout=timeout, message=body)


def parse_cancel(msg: Message) -> tuple[str, Optional[str]]:
    """Read a ``task_cancel`` message: its ``task_id`` and ``reason`` (None when absent or not text).

    Raises:
        ProtocolError: no usable ``task_id``.
    """
    # Seed: fields at the top level; Go: in "data" (docs/protocol.md §3.2), as parse_task reads them.
    body = msg.body if "task_id" in msg.body else msg.fields
    task_id = body.get("task_id")
    if not isinstance(task_id, str) or not task_id or len(task_id) > MAX_TASK_ID:
        raise ProtocolError("task_cancel has no usable 'task_id' (a non-empty string of at most 256 characters)")
    reason = body.get("reason")
    return task_id, reason[:MAX_TEXT] if isinstance(reason, str) and reason else None


def frame_size(frame: str) -> int:
    """Bytes of a text frame on the wire: its UTF-8 length (a character takes 1 to 4 bytes).

    A lone surrogate, which has no UTF-8 form, counts as the 3 bytes ``surrogatepass`` gives it.
    """
    return len(frame) if frame.isascii() else len(frame.encode("utf-8", "surrogatepass"))


def _dumps(obj: Mapping[str, Any]) -> str:
    # UTF-8, not \u escapes: CJK text takes 3 bytes a character instead of 6 (docs/protocol.md §3.1).
    # allow_nan=False: NaN and Infinity are not JSON.
    text = _ENCODER.encode(obj)
    if text.isascii():  # the common case, at no cost: isascii() reads a flag of the string
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (it can arrive as a "\ud800" escape and be echoed back) has no UTF-8
        # form: websocket-client's send would fail and drop the connection. Escaped, it is ASCII.
        return _ASCII_ENCODER.encode(obj)
    return text


# One encoder each for the process: json.dumps() with options builds a new JSONEncoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def node_ready(pc_id: str, *, task_types: list[str], capacity: int) -> str:
    """The ``node_ready`` message (extra fields are ignored by hubs)."""
    return _dumps({
        "type": "node_ready", "pc_id": pc_id, "timestamp": int(time.time()),
        "task_types": task_types, "capacity": capacity, "features": list(FEATURES),
    })


def task_completed(task_id: str, result: Any, attempts: Optional[int] = None) -> str:
    """A ``completed`` task_result; with ``attempts`` (a type with ``retries=``), how many attempts ran.

    Raises:
        TypeError, ValueError: ``result`` is not JSON-serialisable.
    """
    frame = {"type": "task_result", "task_id": task_id, "status": "completed",
             "result": result, "timestamp": int(time.time())}
    if attempts is not None:
        frame["attempts"] = attempts
    return _dumps(frame)


def task_failed(task_id: str, error: str, *, max_bytes: int = 0, timestamp: Optional[int] = None,
                attempts: Optional[int] = None) -> str:
    """A ``failed`` task_result carrying ``error``, cut if needed to fit :data:`MAX_FAILED_BYTES`.

    Args:
        max_bytes: OCTOHUB_MAX_RESULT_BYTES (0: none); the frame fits it too when it is smaller.
        timestamp: the result's time (default: now).
        attempts: how many attempts ran (a type with ``retries=``), or None to leave the field out.
    """
    stamp = int(time.time()) if timestamp is None else timestamp
    frame = _failed(task_id, error, stamp, attempts)
    limit = min(max_bytes, MAX_FAILED_BYTES) if max_bytes else MAX_FAILED_BYTES
    if len(frame) <= limit // 4 or frame_size(frame) <= limit:  # the common case: a short error
        return frame
    # The longest head of the error whose frame (with the marker) fits: sizes grow with the head, so
    # a binary search measures about 14 frames of at most `limit` bytes, once per oversized failure.
    low, high = 0, min(len(error), limit)
    while low < high:
        middle = (low + high + 1) // 2
        if frame_size(_failed(task_id, cut_text(error, middle), stamp, attempts)) <= limit:
            low = middle
        else:
            high = middle - 1
    return _failed(task_id, cut_text(error, low), stamp, attempts)  # low 0: a task_id too long for a tiny limit


def _failed(task_id: str, error: str, timestamp: int, attempts: Optional[int] = None) -> str:
    frame: dict[str, Any] = {"type": "task_result", "task_id": task_id, "status": "failed", "error": error,
                             "timestamp": timestamp}
    if attempts is not None:
        frame["attempts"] = attempts
    return _dumps(frame)


def cut_text(text: str, keep: int) -> str:
    """``text`` if at most ``keep`` characters long, else its first ``keep`` and a marker saying how much is cut."""
    if len(text) <= keep:
        return text
    return f"{text[:keep]}... [cut: {len(text) - keep:,} more characters]"


def fit_result(frame: str, max_bytes: int) -> Optional[str]:
    """A stored ``task_result`` frame made to fit today's limits: ``frame`` itself when it fits, None to drop it.

    A result kept by an older version (a ledger) may be larger than a hub accepts, and would block
    every connection it is sent on: a ``failed`` one gets its error cut (:func:`task_failed`), a
    ``completed`` one over ``max_bytes`` becomes ``failed`` ``ResultTooLarge``; an oversized frame that
    is no task_result is dropped.
    """
    size = frame_size(frame)
    if size <= MAX_FAILED_BYTES:
        return frame
    head = _RESULT_HEAD.match(frame)  # the node's own frames: their status read without parsing them
    if head is not None and head.group(1) == "completed" and (not max_bytes or size <= max_bytes):
        return frame
    try:
        body = json.loads(frame)
        task_id, stamp = body["task_id"], body.get("timestamp")
        stamp = stamp if isinstance(stamp, int) else None
        if body.get("status") == "failed":
            return task_failed(task_id, str(body.get("error")), max_bytes=max_bytes, timestamp=stamp)
        if not max_bytes or size <= max_bytes:
            return frame
        return task_failed(task_id, f"ResultTooLarge: {size} bytes (limit {max_bytes}, OCTOHUB_MAX_RESULT_BYTES)",
                           timestamp=stamp)
    except (ValueError, TypeError, KeyError, RecursionError):  # not a task_result: nothing to send
        return None


def task_progress(task_id: str, progress: Optional[float], message: Optional[str], timestamp: float,
                  attempt: Optional[int] = None) -> str:
    """A ``task_progress`` message; ``message`` is left out when None, ``attempt`` (``retries=``) too."""
    frame: dict[str, Any] = {"type": "task_progress", "task_id": task_id, "progress": progress}
    if message is not None:
        frame["message"] = message
    if attempt is not None:
        frame["attempt"] = attempt
    frame["timestamp"] = int(timestamp)
    return _dumps(frame)


def json_ping(request_id: str) -> str:
    """The Go server's JSON ping: it answers ``{"action": "pong", .., "request_id": ..}`` through its own
    queue, after its answers to everything sent before (docs/protocol.md §4)."""
    return _dumps({"action": "ping", "request_id": request_id})


def pong(msg: Message) -> str:
    """Answer a JSON ping in the form it came in, echoing its ``request_id``."""
    reply: dict[str, Any] = {msg.dialect.value: "pong", "timestamp": int(time.time())}
    request_id = msg.body.get("request_id")
    if request_id is None:
        return _dumps(reply)
    reply["request_id"] = request_id
    try:
        text = _dumps(reply)
    except (ValueError, RecursionError):  # a request_id of NaN, or nested too deeply: answer without it
        text = ""
    if text and len(text) <= MAX_REQUEST_ID_BYTES // 4:  # the common case: a short request_id
        return text
    del reply["request_id"]
    bare = _dumps(reply)
    # A request_id of megabytes would make the pong a frame over the hub's limit: answered without it.
    # 14: the bytes of ',"request_id":'.
    return text if text and frame_size(text) - frame_size(bare) - 14 <= MAX_REQUEST_ID_BYTES else bare
