"""dispatch() and the protocol codec without a socket: every kind, both dialects, task validation.

The seed dialect names a message by ``type`` with fields at the top level; the Go
server names it by ``action`` and wraps the fields in ``data`` (docs/protocol.md §3.1).
"""
from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from octohub_sync import ProtocolError
from octohub_sync._wire import protocol
from octohub_sync._node.dispatch import Plan, dispatch
from octohub_sync._wire.protocol import MAX_TASK_ID, Dialect

MAX = 1 << 20


def route(message: Any, *, handlers: tuple[str, ...] = (), max_bytes: int = MAX) -> Plan:
    frame = message if isinstance(message, (str, bytes)) else json.dumps(message, ensure_ascii=False)
    return dispatch(frame, max_bytes=max_bytes, handlers=handlers)


def assert_inert(plan: Plan) -> None:
    """The plan asks for no action at all (logging aside)."""
    assert plan.reply is None
    assert plan.task is None
    assert plan.handshake is False
    assert plan.closing is None
    assert plan.replaced is False
    assert plan.handler is None


def seed(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


def go(kind: str, data: Any = None, **top: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"action": kind, **top}
    if data is not None:
        message["data"] = data
    return message


# -- task ----------------------------------------------------------------------------------


def test_seed_task_parsed() -> None:
    message = seed("task", task_id="task_123", task_type="echo", data={"x": [1, "二"]}, timeout=2.5)
    plan = route(message)
    assert plan.task is not None
    task = plan.task
    assert task.task_id == "task_123"
    assert task.task_type == "echo"
    assert task.data == {"x": [1, "二"]}
    assert task.timeout == 2.5
    assert task.message == message  # handlers get the whole message
    assert plan.reply is None and not plan.handshake and plan.closing is None
    assert plan.message is not None and plan.message.dialect is Dialect.SEED


def test_task_named_by_action_with_top_level_fields() -> None:
    """A hub that names the task by ``action`` but keeps the seed layout (fields at the top level)."""
    message = {"action": "task", "task_id": "t1", "task_type": "echo", "data": {"k": "v"}}
    task = route(message).task
    assert task is not None
    assert (task.task_id, task.task_type, dict(task.data), task.timeout) == ("t1", "echo", {"k": "v"}, None)
    assert task.message["data"] == {"k": "v"}


def test_go_wrapped_task_parsed() -> None:
    """The Go form ``{"action":"task","data":{task fields}}`` reads the fields from ``data``,
    as every other kind does (Message.fields), and the handler sees the task, not the wrapper."""
    message = go("task", {"task_id": "t2", "task_type": "echo", "data": {"k": 1}, "timeout": 3})
    task = route(message).task
    assert task is not None
    assert (task.task_id, task.task_type, dict(task.data), task.timeout) == ("t2", "echo", {"k": 1}, 3.0)
    assert task.message["task_id"] == "t2"
    assert task.message["data"] == {"k": 1}


def test_task_timeout_zero_and_absent_mean_none() -> None:
    assert route(seed("task", task_id="a", task_type="echo", timeout=0)).task.timeout is None  # type: ignore[union-attr]
    assert route(seed("task", task_id="a", task_type="echo")).task.timeout is None  # type: ignore[union-attr]
    assert route(seed("task", task_id="a", task_type="echo", timeout=7)).task.timeout == 7.0  # type: ignore[union-attr]


def test_task_data_null_or_missing_is_empty_dict() -> None:
    for message in (seed("task", task_id="a", task_type="echo", data=None), seed("task", task_id="a", task_type="echo")):
        task = route(message).task
        assert task is not None and task.data == {} and isinstance(task.data, dict)


def test_task_id_of_maximum_length_accepted() -> None:
    task = route(seed("task", task_id="x" * MAX_TASK_ID, task_type="echo")).task
    assert task is not None and len(task.task_id) == MAX_TASK_ID


BAD_TASKS = {
    "task_id missing": seed("task", task_type="echo", data={}),
    "task_id null": seed("task", task_id=None, task_type="echo"),
    "task_id int": seed("task", task_id=123, task_type="echo"),
    "task_id list": seed("task", task_id=["a"], task_type="echo"),
    "task_id object": seed("task", task_id={"id": "a"}, task_type="echo"),
    "task_id bool": seed("task", task_id=True, task_type="echo"),
    "task_id empty": seed("task", task_id="", task_type="echo"),
    "task_id too long": seed("task", task_id="x" * (MAX_TASK_ID + 1), task_type="echo"),
    "task_type missing": seed("task", task_id="a", data={}),
    "task_type null": seed("task", task_id="a", task_type=None),
    "task_type int": seed("task", task_id="a", task_type=5),
    "task_type empty": seed("task", task_id="a", task_type=""),
    "data list": seed("task", task_id="a", task_type="echo", data=[1, 2]),
    "data string": seed("task", task_id="a", task_type="echo", data="x"),
    "data number": seed("task", task_id="a", task_type="echo", data=1),
    "data bool": seed("task", task_id="a", task_type="echo", data=False),
    "timeout negative": seed("task", task_id="a", task_type="echo", timeout=-1),
    "timeout negative float": seed("task", task_id="a", task_type="echo", timeout=-0.5),
    "timeout true": seed("task", task_id="a", task_type="echo", timeout=True),
    "timeout false": seed("task", task_id="a", task_type="echo", timeout=False),
    "timeout string": seed("task", task_id="a", task_type="echo", timeout="5"),
    "timeout list": seed("task", task_id="a", task_type="echo", timeout=[5]),
    "timeout object": seed("task", task_id="a", task_type="echo", timeout={"s": 5}),
}


@pytest.mark.parametrize("message", list(BAD_TASKS.values()), ids=list(BAD_TASKS))
def test_bad_task_raises_protocol_error(message: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        route(message)
    # The same through the action-named form.
    with pytest.raises(ProtocolError):
        route({"action": "task", **{k: v for k, v in message.items() if k != "type"}})


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_task_timeout_not_finite_raises(literal: str) -> None:
    # Python's json accepts NaN and Infinity tokens; 1e999 overflows to inf.
    frame = '{"type":"task","task_id":"a","task_type":"echo","timeout":%s}' % literal
    with pytest.raises(ProtocolError):
        route(frame)


def test_task_timeout_huge_integer_raises_protocol_error() -> None:
    # A 400-digit integer is valid JSON and becomes a Python int too large for a float.
    frame = '{"type":"task","task_id":"a","task_type":"echo","timeout":1%s}' % ("0" * 400)
    with pytest.raises(ProtocolError):
        route(frame)


def test_integer_over_python_digit_limit_raises_protocol_error() -> None:
    # Python refuses to convert integers of more than 4300 digits (a ValueError without .msg).
    with pytest.raises(ProtocolError):
        route('{"type":"ping","n":%s}' % ("1" * 5000))


# -- ping ----------------------------------------------------------------------------------


def test_seed_ping_answered_with_seed_pong() -> None:
    plan = route(seed("ping"))
    assert plan.reply is not None and plan.task is None
    reply = json.loads(plan.reply)
    assert reply["type"] == "pong" and "action" not in reply
    assert isinstance(reply["timestamp"], int)
    assert "request_id" not in reply


def test_seed_ping_request_id_echoed() -> None:
    reply = json.loads(route(seed("ping", request_id="r-seed")).reply)  # type: ignore[arg-type]
    assert reply == {"type": "pong", "timestamp": reply["timestamp"], "request_id": "r-seed"}


@pytest.mark.parametrize("request_id", ["abc123", 42, {"n": 1}, ["x"], "请求"])
def test_go_ping_answered_in_go_form_with_request_id(request_id: Any) -> None:
    plan = route(go("ping", request_id=request_id))
    reply = json.loads(plan.reply)  # type: ignore[arg-type]
    assert reply["action"] == "pong" and "type" not in reply
    assert reply["request_id"] == request_id
    assert isinstance(reply["timestamp"], int)


def test_go_ping_with_data_answered() -> None:
    reply = json.loads(route(go("ping", {"x": 1}, request_id="r9")).reply)  # type: ignore[arg-type]
    assert reply["action"] == "pong" and reply["request_id"] == "r9"


def test_ping_request_id_nan_answered_without_it() -> None:
    reply = json.loads(route('{"action":"ping","request_id":NaN}').reply)  # type: ignore[arg-type]
    assert reply["action"] == "pong" and "request_id" not in reply


def test_ping_reply_is_sendable_utf8() -> None:
    """A lone surrogate (valid JSON escape) in request_id must not make the reply unsendable:
    websocket-client encodes text frames as UTF-8 and the send failure would abort the connection."""
    plan = route('{"action":"ping","request_id":"\\ud800x"}')
    assert plan.reply is not None
    plan.reply.encode("utf-8")
    assert json.loads(plan.reply)["request_id"] == "\ud800x"


# -- connected -----------------------------------------------------------------------------


def test_seed_connected_is_handshake() -> None:
    plan = route(seed("connected", pc_id="node_1", session_id="sess-seed", server_time=1))
    assert plan.handshake is True
    assert plan.reply is None and plan.task is None and plan.closing is None
    assert plan.log_level == logging.INFO and "sess-seed" in plan.log_text


def test_go_connected_is_handshake() -> None:
    message = go("connected", {"pc_id": "node_1", "session_id": "sess-go", "server_time": 1}, timestamp=1)
    plan = route(message)
    assert plan.handshake is True
    assert plan.reply is None and plan.task is None and plan.closing is None
    assert "sess-go" in plan.log_text
    assert plan.message is not None and plan.message.dialect is Dialect.GO


def test_bare_connected_is_handshake() -> None:
    assert route(seed("connected")).handshake is True
    assert route(go("connected")).handshake is True


# -- disconnect ------------------------------------------------------------------------------


def test_seed_disconnect_notification_replaced() -> None:
    plan = route(seed("disconnect_notification", reason="新连接建立: another connection replaced this one"))
    assert plan.closing is not None and "新连接建立" in plan.closing
    assert plan.replaced is True
    assert plan.reply is None and plan.task is None and not plan.handshake
    assert plan.log_level == logging.WARNING
    assert "pc_id" in plan.log_text  # names the likely cause


def test_go_disconnected_replaced() -> None:
    plan = route(go("disconnected", {"reason": "新连接建立", "code": 1000}, **{"from": "system"}))
    assert plan.closing == "新连接建立"
    assert plan.replaced is True
    assert plan.reply is None and plan.task is None


@pytest.mark.parametrize("message", [
    seed("disconnect_notification", reason="server shutting down"),
    go("disconnected", {"reason": "server shutting down", "code": 1001}),
], ids=["seed", "go"])
def test_disconnect_other_reason_not_replaced(message: dict[str, Any]) -> None:
    plan = route(message)
    assert plan.closing == "server shutting down"
    assert plan.replaced is False
    assert plan.log_level == logging.WARNING


@pytest.mark.parametrize("message", [seed("disconnect_notification"), go("disconnected")], ids=["seed", "go"])
def test_disconnect_without_reason_still_closing(message: dict[str, Any]) -> None:
    plan = route(message)
    assert plan.closing  # non-empty: the node must act on it
    assert plan.replaced is False


def test_disconnect_seed_kind_in_go_dialect_and_vice_versa() -> None:
    assert route(go("disconnect_notification", {"reason": "新连接建立"})).replaced is True
    assert route(seed("disconnected", reason="新连接建立")).replaced is True


# -- error -----------------------------------------------------------------------------------


def test_go_error_1002_is_debug_and_unanswered() -> None:
    plan = route(go("error", {"code": 1002, "message": "unknown action", "details": "x"}))
    assert_inert(plan)
    assert plan.log_level == logging.DEBUG
    assert "1002" in plan.log_text


@pytest.mark.parametrize("code", [1001, 1003, 500, None, "1002", "oops"])
def test_go_error_other_codes_are_warning_and_unanswered(code: Any) -> None:
    data = {"message": "bad things"} if code is None else {"code": code, "message": "bad things"}
    plan = route(go("error", data))
    assert_inert(plan)
    assert plan.log_level == logging.WARNING
    assert "bad things" in plan.log_text


def test_seed_error_form() -> None:
    assert route(seed("error", code=1002, message="m")).log_level == logging.DEBUG
    plan = route(seed("error", code=1001, message="m"))
    assert_inert(plan)
    assert plan.log_level == logging.WARNING


# -- pong, handlers, unknown -------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    seed("pong", timestamp=1),
    go("pong", {"server_time": 1}, request_id="r"),
], ids=["seed", "go"])
def test_pong_does_nothing(message: dict[str, Any]) -> None:
    plan = route(message)
    assert_inert(plan)
    assert plan.log_text == ""


@pytest.mark.parametrize("message", [
    seed("notification", text="hi"),
    go("notification", {"text": "hi"}),
], ids=["seed", "go"])
def test_registered_kind_goes_to_handler(message: dict[str, Any]) -> None:
    plan = route(message, handlers=("notification", "other"))
    assert plan.handler == "notification"
    assert plan.reply is None and plan.task is None and not plan.handshake and plan.closing is None
    assert plan.message is not None and plan.message.body == message


@pytest.mark.parametrize("message", [
    seed("something_else", x=1),
    go("something_else", {"x": 1}),
], ids=["seed", "go"])
def test_unknown_kind_is_ignored_with_debug_text(message: dict[str, Any]) -> None:
    plan = route(message, handlers=("notification",))
    assert_inert(plan)
    assert plan.log_level == logging.DEBUG
    assert "something_else" in plan.log_text


def test_built_in_kinds_win_over_handlers() -> None:
    """A handler registered for a built-in kind does not take it away from the node."""
    handlers = ("task", "ping", "connected")
    assert route(seed("task", task_id="a", task_type="echo"), handlers=handlers).task is not None
    assert route(seed("ping"), handlers=handlers).reply is not None
    assert route(seed("connected"), handlers=handlers).handshake is True


# -- kind detection and decoding ---------------------------------------------------------------


def test_type_wins_over_action() -> None:
    plan = route({"type": "ping", "action": "connected"})
    assert plan.reply is not None and not plan.handshake
    assert plan.message is not None and plan.message.dialect is Dialect.SEED


def test_non_string_type_falls_back_to_action() -> None:
    plan = route({"type": 5, "action": "ping", "request_id": "r"})
    assert plan.message is not None and plan.message.dialect is Dialect.GO
    assert json.loads(plan.reply)["action"] == "pong"  # type: ignore[arg-type]


def test_go_fields_read_from_data_but_body_kept() -> None:
    message = go("custom", {"a": 1}, extra=2)
    msg = protocol.decode(json.dumps(message), max_bytes=MAX)
    assert msg.kind == "custom" and msg.dialect is Dialect.GO
    assert msg.fields == {"a": 1}
    assert msg.body == message


def test_go_data_not_object_means_fields_are_body() -> None:
    msg = protocol.decode(json.dumps(go("custom", [1, 2])), max_bytes=MAX)
    assert msg.fields == msg.body


def test_bytes_frame_decoded_as_utf8() -> None:
    plan = route(json.dumps(seed("ping")).encode())
    assert plan.reply is not None
    task = route(json.dumps(seed("task", task_id="任务", task_type="echo"), ensure_ascii=False).encode()).task
    assert task is not None and task.task_id == "任务"


BAD_FRAMES = {
    "empty": "",
    "not json": "{not json",
    "truncated": '{"type":"ping"',
    "array": "[]",
    "null": "null",
    "number": "12",
    "string": '"ping"',
    "true": "true",
    "empty object": "{}",
    "type null": '{"type":null}',
    "type int": '{"type":1}',
    "type empty": '{"type":""}',
    "action empty": '{"action":""}',
    "action list": '{"action":["ping"]}',
    "invalid utf-8": b'{"type":"ping","x":"\xff"}',
    "overlong utf-8": b'{"type":"ping","x":"\xc0\xaf"}',
    "utf-8 surrogate": b'{"type":"ping","x":"\xed\xa0\x80"}',
    "deep": "[" * 100_000,
    "deep object": '{"a":' * 100_000,
}


@pytest.mark.parametrize("frame", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_unusable_frame_raises_protocol_error(frame: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        route(frame)


def test_frame_size_limit() -> None:
    ping = json.dumps(seed("ping"))
    assert route(ping, max_bytes=len(ping)).reply is not None
    with pytest.raises(ProtocolError):
        route(ping, max_bytes=len(ping) - 1)
    with pytest.raises(ProtocolError):
        route(ping.encode(), max_bytes=len(ping) - 1)


def test_frame_size_limit_counts_utf8_bytes_of_text() -> None:
    """max_bytes is bytes (OCTOHUB_MAX_MESSAGE_BYTES): a str frame is measured in UTF-8, not characters."""
    frame = json.dumps(seed("ping", pad="字" * 100), ensure_ascii=False)
    assert len(frame) < 200 < len(frame.encode())
    with pytest.raises(ProtocolError):
        route(frame, max_bytes=200)


# -- encoders ----------------------------------------------------------------------------------


def test_node_messages_are_compact_json() -> None:
    ready = json.loads(protocol.node_ready("node_1", task_types=["echo"], capacity=4))
    assert ready["type"] == "node_ready" and ready["pc_id"] == "node_1" and isinstance(ready["timestamp"], int)
    done = json.loads(protocol.task_completed("t1", {"a": "二"}))
    assert done == {"type": "task_result", "task_id": "t1", "status": "completed",
                    "result": {"a": "二"}, "timestamp": done["timestamp"]}
    failed = json.loads(protocol.task_failed("t1", "ValueError: x"))
    assert failed["status"] == "failed" and failed["error"] == "ValueError: x"


def test_task_result_refuses_nan() -> None:
    with pytest.raises(ValueError):
        protocol.task_completed("t1", float("nan"))


def test_task_result_with_lone_surrogate_is_sendable() -> None:
    """Data a hub sent as a JSON escape (\\ud800) comes back in the echo result; the result
    text must still encode as UTF-8, or the send fails and the node drops the connection."""
    task = route('{"type":"task","task_id":"t\\udc80","task_type":"echo","data":{"s":"\\ud800"}}').task
    assert task is not None
    for frame in (protocol.task_completed(task.task_id, dict(task.data)), protocol.task_failed(task.task_id, "E: x")):
        frame.encode("utf-8")
        assert json.loads(frame)["task_id"] == "t\udc80"


def test_recursion_while_routing_is_a_protocol_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # json.loads can decode a value nested just below its limit, and str() or json.dumps() of it
    # while routing can then hit the limit first. At which depth depends on the stack the frame
    # arrives on (test_hostile_input scans the depths), so the error is forced here.
    import octohub_sync._node.dispatch as routing

    def too_deep(msg: Any, handlers: Any) -> Plan:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(routing, "_route", too_deep)
    with pytest.raises(ProtocolError, match="nested too deeply"):
        route(seed("ping", request_id=[[1]]))
