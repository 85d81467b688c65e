"""The node's frames are UTF-8 JSON (docs/protocol.md §3.1): non-ASCII text travels as itself, not as
\\u escapes; a frame holding a lone surrogate, which UTF-8 cannot carry, goes out escaped; the result
limit counts UTF-8 bytes."""
from __future__ import annotations

import json
from typing import Any

import pytest

from octohub_sync._wire import protocol
from octohub_sync.hub import LocalHub

from .conftest import connected_node

#: A typical result of a Chinese page: 3 bytes a character in UTF-8, 6 as a \\u escape.
CJK = "北京市今天天气晴朗，最高气温二十五度。"


def node_returning(make_node: Any, hub: LocalHub, *, handlers: dict[str, Any] = {}, **opts: Any) -> Any:
    """A node whose ``give`` handler returns its task's ``data["value"]``, and ``handlers``."""
    return connected_node(make_node, {"give": lambda task: task["data"]["value"], **handlers}, **opts)


def test_a_cjk_result_reaches_the_hub_as_utf8(make_node: Any, hub: LocalHub) -> None:
    node_returning(make_node, hub)
    value = {"title": CJK, "emoji": "🐙"}
    received = hub.wait_result(hub.send_task("give", {"value": value}))
    assert received["result"] == value
    sent = {k: v for k, v in received.items() if not k.startswith("_")}
    utf8 = len(json.dumps(sent, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    escaped = len(json.dumps(sent, separators=(",", ":")))  # what the node sent before
    assert received["_bytes"] == utf8 == escaped - (6 - 3) * len(CJK) - (12 - 4)  # CJK: 3 bytes, not 6


def test_a_lone_surrogate_goes_out_escaped_and_only_that_frame(make_node: Any, hub: LocalHub) -> None:
    r"""\ud800 (a valid JSON escape from the hub, echoed back) has no UTF-8 form: its frame alone is escaped."""
    node = node_returning(make_node, hub)
    lone = hub.wait_result(hub.send_task("give", {"value": CJK + "\ud800"}))
    after = hub.wait_result(hub.send_task("give", {"value": CJK}))
    assert lone["result"] == CJK + "\ud800" and after["result"] == CJK
    assert lone["_bytes"] - after["_bytes"] == (6 - 3) * len(CJK) + 6  # every character escaped, and the surrogate
    assert len(hub.connections) == 1 and node.stats()["tasks_completed"] == 2  # the same session throughout


def test_the_result_limit_counts_utf8_bytes(make_node: Any, hub: LocalHub) -> None:
    node = node_returning(make_node, hub, max_result_bytes=2000)
    fits = hub.send_task("give", {"value": "字" * 600})  # a frame of about 1900 bytes
    over = hub.send_task("give", {"value": "字" * 700})  # about 800 characters but 2200 bytes
    assert hub.wait_result(fits)["status"] == "completed"
    result = hub.wait_result(over)
    assert result["status"] == "failed" and result["error"].startswith("ResultTooLarge: ")
    stated = int(result["error"].split()[1])  # the error gives the frame's size in bytes, not characters
    assert stated > 3 * 700 and node.stats()["tasks_failed"] == 1


def test_frame_size_is_the_utf8_length() -> None:
    assert protocol.frame_size('{"a":"x"}') == 9
    assert protocol.frame_size(CJK) == 3 * len(CJK)
    assert protocol.frame_size("🐙") == 4
    assert protocol.frame_size("\ud800") == 3  # what surrogatepass gives it; such a frame is never sent raw


@pytest.mark.parametrize("result, text", [
    ({"z": 1, "a": 2, "m": [3]}, '{"z":1,"a":2,"m":[3]}'),  # key order kept, ASCII as before
    (2**100, str(2**100)),  # an integer beyond 64 bits, exactly
    ({"名": "任务", "n": -2**70}, '{"名":"任务","n":%d}' % -2**70),  # UTF-8 keys and values
    ("\ud800任务", '"\\ud800\\u4efb\\u52a1"'),  # a lone surrogate: the whole frame escaped
])
def test_result_frames_keep_order_and_numbers(result: Any, text: str) -> None:
    frame = protocol.task_completed("t1", result)
    head = '{"type":"task_result","task_id":"t1","status":"completed","result":'
    assert frame.startswith(head + text + ',"timestamp":')
    frame.encode("utf-8")  # sendable
    assert json.loads(frame)["result"] == result


def test_nan_in_a_cjk_result_is_still_refused(make_node: Any, hub: LocalHub) -> None:
    node_returning(make_node, hub, handlers={"nan": lambda task: {"名": float("nan")}})
    result = hub.wait_result(hub.send_task("nan"))
    assert result["status"] == "failed" and result["error"].startswith("ResultNotSerializable: ")
    assert hub.wait_result(hub.send_task("give", {"value": CJK}))["result"] == CJK


@pytest.mark.parametrize("make", [
    lambda: protocol.task_failed("任务", "ValueError: 无效的输入"),
    lambda: protocol.task_progress("任务", 0.5, "正在下载", 1700000000),
    lambda: protocol.node_ready("节点", task_types=["抓取"], capacity=8),
])
def test_every_message_of_the_node_is_utf8(make: Any) -> None:
    frame = make()
    assert not frame.isascii() and "\\u" not in frame
    json.loads(frame)
