"""Hostile input: whatever a hub (or anything pretending to be one) sends, the node survives.

Two halves: property-based tests of :func:`dispatch` (the only exception it may raise
is ProtocolError, what it accepts is usable, and valid tasks and pings are accepted
unchanged: a dispatch that refused everything fails them), then bursts of bad frames
through a real local hub in both dialects (counted, skipped, the same connection carries on).
"""
from __future__ import annotations

import json
import logging
import math
import sys
from typing import Any, Iterator, Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octohub_sync import NodeWebSocketClient, ProtocolError
from octohub_sync._wire import protocol
from octohub_sync._node.dispatch import Plan, dispatch
from octohub_sync.hub import LocalHub
from octohub_sync._wire.protocol import MAX_TASK_ID

from .conftest import KEY, node_threads, wait_until

pytestmark = pytest.mark.timeout(30)

MAX = 1 << 20
#: database=None: no example database kept in the project folder.
PROPERTY = settings(deadline=None, max_examples=120, database=None, suppress_health_check=[HealthCheck.too_slow])

KINDS = ("task", "ping", "pong", "connected", "disconnect_notification", "disconnected", "error",
         "notification", "node_ready", "")

# Every character, lone surrogates included: a JSON escape such as \ud800 decodes to one.
any_char = st.characters(exclude_categories=())
any_text = st.text(any_char, max_size=20)

json_scalars = (
    st.none() | st.booleans()
    | st.integers() | st.integers(min_value=-(10 ** 500), max_value=10 ** 500)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20,
)


def check(frame: str | bytes, *, max_bytes: int = MAX, handlers: tuple[str, ...] = ("notification",)) -> Optional[Plan]:
    """dispatch() raises nothing but ProtocolError, and what it accepts the node can act on."""
    try:
        plan = dispatch(frame, max_bytes=max_bytes, handlers=handlers)
    except ProtocolError:
        return None
    assert isinstance(plan, Plan)
    if plan.task is not None:
        task = plan.task
        assert isinstance(task.task_id, str) and 0 < len(task.task_id) <= MAX_TASK_ID
        assert isinstance(task.task_type, str) and task.task_type
        assert isinstance(task.data, dict)
        assert task.timeout is None or (isinstance(task.timeout, float) and math.isfinite(task.timeout) and task.timeout > 0)
        # Whatever the handler makes of it, the node must be able to send an answer on a text frame.
        protocol.task_failed(task.task_id, "Error: x").encode("utf-8")
        try:
            echoed = protocol.task_completed(task.task_id, {"echo": task.data})
        except (ValueError, RecursionError):
            pass  # NaN or too deep: the runner answers "failed" (ResultNotSerializable)
        else:
            echoed.encode("utf-8")
    if plan.reply is not None:
        assert isinstance(json.loads(plan.reply), dict)
        plan.reply.encode("utf-8")  # must be sendable, or the send aborts the connection
    if plan.handler is not None:
        assert plan.handler in handlers
    assert isinstance(plan.log_text, str)
    return plan


def frames_of(value: Any, ascii_only: bool) -> Iterator[str | bytes]:
    """The JSON text of ``value`` as str, and as bytes when it has a UTF-8 form."""
    try:
        text = json.dumps(value, ensure_ascii=ascii_only)
    except (ValueError, RecursionError):
        return
    yield text
    yield text.encode("utf-8", "surrogatepass")  # lone surrogates: invalid UTF-8, must be refused


def utf8(frame: str | bytes) -> bool:
    """True unless ``frame`` is bytes that are not valid UTF-8 (lone surrogates, for one)."""
    try:
        if isinstance(frame, bytes):
            frame.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- properties of dispatch() --------------------------------------------------------------


@PROPERTY
@given(json_values, st.booleans())
def test_any_json_value(value: Any, ascii_only: bool) -> None:
    for frame in frames_of(value, ascii_only):
        check(frame)


@PROPERTY
@given(st.binary(max_size=300))
def test_any_bytes(frame: bytes) -> None:
    check(frame)


@PROPERTY
@given(st.text(any_char, max_size=300))
def test_any_text(frame: str) -> None:
    check(frame)


field_values = json_values | st.sampled_from(KINDS) | st.text(max_size=MAX_TASK_ID + 5) | st.sampled_from(
    ["x" * MAX_TASK_ID, "x" * (MAX_TASK_ID + 1), 10 ** 400, -(10 ** 400), 1e308, -0.0, 0, -1, True, "5"])
optional_fields = {
    name: field_values
    for name in ("task_id", "task_type", "data", "timeout", "request_id", "reason", "code", "message",
                 "session_id", "details")
}


@st.composite
def message_shaped(draw: st.DrawFn) -> dict[str, Any]:
    fields = draw(st.fixed_dictionaries({}, optional=optional_fields))
    kind_key = draw(st.sampled_from(["type", "action", "both", "none"]))
    kind = draw(st.sampled_from(KINDS) | json_values)
    if draw(st.booleans()):  # Go form: fields wrapped in data
        message: dict[str, Any] = {"data": fields if draw(st.booleans()) else draw(json_values)}
    else:
        message = dict(fields)
    if kind_key in ("type", "both"):
        message["type"] = kind
    if kind_key in ("action", "both"):
        message["action"] = draw(st.sampled_from(KINDS) | json_values)
    return message


@PROPERTY
@given(message_shaped(), st.booleans(), st.sampled_from([(), ("notification",), KINDS]))
def test_message_shaped_dicts(message: dict[str, Any], ascii_only: bool, handlers: tuple[str, ...]) -> None:
    for frame in frames_of(message, ascii_only):
        check(frame, handlers=handlers)


task_values = st.one_of(
    any_text, json_values, st.integers(min_value=-(10 ** 500), max_value=10 ** 500),
    st.sampled_from(["x" * MAX_TASK_ID, "x" * (MAX_TASK_ID + 1), "", 0, -1, True, "5", None, 10 ** 400, 1e308]),
)


@PROPERTY
@given(
    st.fixed_dictionaries(
        {"task_id": any_text | task_values, "task_type": any_text | task_values},
        optional={"data": st.dictionaries(any_text, json_values, max_size=3) | task_values, "timeout": task_values},
    ),
    st.sampled_from(["type", "action"]),
    st.booleans(),
)
def test_task_shaped(fields: dict[str, Any], kind_key: str, ascii_only: bool) -> None:
    for message in ({kind_key: "task", **fields}, {"action": "task", "data": fields}):
        for frame in frames_of(message, ascii_only):
            check(frame)


@PROPERTY
@given(json_values, st.sampled_from(["type", "action"]), st.booleans())
def test_ping_shaped(request_id: Any, kind_key: str, ascii_only: bool) -> None:
    for frame in frames_of({kind_key: "ping", "request_id": request_id}, ascii_only):
        # Any request_id is answered (without it, if it cannot be sent back); only a frame
        # that is not UTF-8 is refused.
        plan = check(frame)
        assert (plan is not None) == utf8(frame), frame
        assert plan is None or plan.reply is not None


@PROPERTY
@given(st.sampled_from(KINDS), json_values, st.integers(min_value=0, max_value=400))
def test_frames_above_max_bytes_refused(kind: str, value: Any, max_bytes: int) -> None:
    frame = json.dumps({"type": kind, "value": value})
    raw = frame.encode("utf-8", "surrogatepass")
    if len(raw) > max_bytes:
        with pytest.raises(ProtocolError):
            dispatch(raw, max_bytes=max_bytes)
        with pytest.raises(ProtocolError):
            dispatch(frame, max_bytes=max_bytes)
    else:
        # Within the limit, every kind but "task" (which lacks its fields here) and "" is accepted.
        plan = check(raw, max_bytes=max_bytes)
        assert (plan is not None) == (kind not in ("task", "") and utf8(raw)), frame


#: JSON values that come back from a round trip equal to themselves (no NaN) and that a pong
#: can carry (no infinity).
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10 ** 500), max_value=10 ** 500)
    | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20,
)


@st.composite
def valid_tasks(draw: st.DrawFn) -> dict[str, Any]:
    """The fields of a task the node must run: every optional field present or not."""
    fields: dict[str, Any] = {
        "task_id": draw(st.text(any_char, min_size=1, max_size=MAX_TASK_ID)),
        "task_type": draw(st.text(any_char, min_size=1, max_size=30)),
    }
    if draw(st.booleans()):
        fields["data"] = draw(st.none() | st.dictionaries(any_text, plain_values, max_size=4))
    if draw(st.booleans()):
        fields["timeout"] = draw(st.none() | st.integers(min_value=0, max_value=10 ** 6)
                                 | st.floats(min_value=0, max_value=1e12))
    return fields


def valid_frames(message: dict[str, Any], ascii_only: bool) -> Iterator[str | bytes]:
    """The JSON text of ``message`` as str, and as bytes when it has a UTF-8 form."""
    text = json.dumps(message, ensure_ascii=ascii_only)
    yield text
    if utf8(text.encode("utf-8", "surrogatepass")):
        yield text.encode("utf-8")


@PROPERTY
@given(valid_tasks(), st.booleans())
def test_valid_tasks_accepted_unchanged(fields: dict[str, Any], ascii_only: bool) -> None:
    # The seed form, the same named by "action", and the Go form with the task wrapped in "data".
    for message, body in (({"type": "task", **fields}, None), ({"action": "task", **fields}, None),
                          ({"action": "task", "data": fields}, fields)):
        for frame in valid_frames(message, ascii_only):
            plan = check(frame)
            assert plan is not None and plan.task is not None, (message, frame)
            task = plan.task
            assert (task.task_id, task.task_type) == (fields["task_id"], fields["task_type"])
            assert task.data == (fields.get("data") or {})
            assert task.timeout == (float(fields["timeout"]) if fields.get("timeout") else None)
            assert task.message == (message if body is None else body)  # what the handler gets
            assert (plan.reply, plan.handshake, plan.closing, plan.handler) == (None, False, None, None)


@PROPERTY
@given(plain_values, st.sampled_from(["type", "action"]), st.booleans())
def test_valid_pings_answered_with_their_request_id(request_id: Any, kind_key: str, ascii_only: bool) -> None:
    for frame in valid_frames({kind_key: "ping", "request_id": request_id}, ascii_only):
        plan = check(frame)
        assert plan is not None and plan.reply is not None, frame
        reply = json.loads(plan.reply)
        # Echoed unless its JSON form is over 1 KiB: the pong must fit any hub's message limit.
        fits = protocol.frame_size(protocol._dumps({"": request_id})) - 5 <= protocol.MAX_REQUEST_ID_BYTES
        assert reply[kind_key] == "pong" and reply.get("request_id") == (request_id if fits else None)
        assert plan.task is None


# -- hand-picked monsters ----------------------------------------------------------------------


@pytest.mark.parametrize("frame", [
    "[" * 100_000,
    "{" * 100_000,
    '{"a":' * 100_000,
    "[" * 100_000 + "]" * 100_000,
    '{"type":"task","task_id":"t","task_type":"echo","data":' + '{"a":' * 50_000 + "1" + "}" * 50_001,
    '{"type":"ping","request_id":' + "[" * 50_000 + "]" * 50_000 + "}",
], ids=["open-arrays", "open-objects", "open-keys", "closed-arrays", "deep-task-data", "deep-request-id"])
def test_deep_nesting(frame: str) -> None:
    check(frame, max_bytes=10 * MAX)
    check(frame.encode(), max_bytes=10 * MAX)


#: Where the deep value goes, for the scan of nesting depths around the recursion limit.
DEEP_TEMPLATES = {
    "ping request_id": '{"action":"ping","request_id":%s}',
    "seed disconnect reason": '{"type":"disconnect_notification","reason":%s}',
    "go disconnect reason": '{"action":"disconnected","data":{"reason":%s}}',
    "error code": '{"action":"error","data":{"code":%s}}',
    "error message": '{"action":"error","data":{"code":1001,"message":%s}}',
    "connected session_id": '{"action":"connected","data":{"session_id":%s}}',
    "task data": '{"type":"task","task_id":"t","task_type":"echo","data":{"d":%s}}',
    "task timeout": '{"type":"task","task_id":"t","task_type":"echo","timeout":%s}',
    "handler message": '{"type":"notification","x":%s}',
}


@pytest.mark.parametrize("template", list(DEEP_TEMPLATES.values()), ids=list(DEEP_TEMPLATES))
def test_nesting_depth_scan_around_recursion_limit(template: str) -> None:
    """Every depth up to past the recursion limit: whatever the stack depth at which json gives
    up, nothing after decoding (pong encoding, str() of a reason) may hit the limit instead."""
    limit = sys.getrecursionlimit()
    for depth in range(max(0, limit - 200), limit + 20):
        for opener, closer in (("[", "]"), ('{"k":', "}")):
            check(template % (opener * depth + "1" + closer * depth), max_bytes=10 * MAX)


def test_huge_strings() -> None:
    big = "x" * (4 * MAX)
    assert check(json.dumps({"type": "task", "task_id": "t", "task_type": "echo", "data": {"s": big}}),
                 max_bytes=5 * MAX) is not None
    assert check(json.dumps({"type": "task", "task_id": big, "task_type": "echo"}), max_bytes=5 * MAX) is None
    plan = check(json.dumps({"type": big}), max_bytes=5 * MAX)
    assert plan is not None and len(plan.log_text) < 1000  # unknown kind, ignored; its name is cut for the log
    plan = check(json.dumps({"type": "disconnect_notification", "reason": big}), max_bytes=5 * MAX)
    assert plan is not None and len(plan.log_text) < 1000  # the reason is cut for the log
    plan = check(json.dumps({"action": "error", "data": {"code": 1, "message": big}}), max_bytes=5 * MAX)
    assert plan is not None and len(plan.log_text) < 1000
    plan = check(json.dumps({"action": "connected", "data": {"session_id": big}}), max_bytes=5 * MAX)
    assert plan is not None and plan.handshake and len(plan.log_text) < 1000  # logged at INFO
    plan = check(json.dumps({"action": "error", "data": {"code": big}}), max_bytes=5 * MAX)
    assert plan is not None and len(plan.log_text) < 1000
    assert check(big, max_bytes=5 * MAX) is None
    assert check('"' + big, max_bytes=5 * MAX) is None
    assert check(big, max_bytes=MAX) is None  # too big


def test_huge_numbers() -> None:
    for number in ("1" + "0" * 400, "-" + "1" * 400, "1" * 5000, "1e999", "-1e999", "NaN", "Infinity", "1" * 4300):
        for template in ('{"type":"task","task_id":"t","task_type":"echo","timeout":%s}',
                         '{"action":"ping","request_id":%s}',
                         '{"action":"error","data":{"code":%s}}',
                         '{"type":"task","task_id":"t","task_type":"echo","data":{"n":%s}}',
                         '%s'):
            check(template % number)


@pytest.mark.parametrize("frame", [
    b"\xff",
    b"\xfe\xff{}",
    b'{"type":"ping","x":"\xc3\x28"}',
    b'{"type":"ping","x":"\xc0\xaf"}',
    b'{"type":"ping","x":"\xed\xa0\x80"}',
    b'{"type":"ping","x":"\xf4\x90\x80\x80"}',
    b'{"type":"ping"}\x80',
    b"\xef\xbb\xbf" + b'{"type":"ping"}',
    b'{"type":"ping"}\x00',
    "\ufeff" + '{"type":"ping"}',
    '{"type":"ping","x":"\ud800"}',
])
def test_invalid_utf8_and_odd_text(frame: str | bytes) -> None:
    check(frame)


# -- end to end: bursts of bad frames through a real hub ----------------------------------------

#: A node that drops anything bigger than this.
SMALL = 1024


def send_text_bytes(hub: LocalHub, data: bytes, pc_id: str) -> None:
    """Send ``data`` as a *text* frame without UTF-8 validation.

    LocalHub.send_raw sends bytes as a binary frame and a str is always valid UTF-8, so
    an invalid-UTF-8 text frame needs the websockets connection itself (send(text=True)).
    """
    links = hub.sessions(pc_id)
    assert links, f"{pc_id} is not connected"
    links[0].ws.send(data, text=True)


def bad_frames(dialect: str) -> list[tuple[str, str | bytes]]:
    """(how to send, frame) pairs; every one must count as one bad frame."""
    task = {"type": "task", "task_id": "bad", "task_type": "echo", "data": {}}
    frames: list[tuple[str, str | bytes]] = [
        ("raw", "{not json"),
        ("raw", ""),
        ("raw", "garbage \x00\x01 text"),
        ("raw", b"\x00\x01binary"),
        ("raw", json.dumps({"type": "ping"}).encode()),  # valid JSON, but in a binary frame
        ("text-bytes", b"\xff\xfe"),
        ("text-bytes", b'{"type":"ping","x":"\xc3\x28"}'),
        ("text-bytes", b'{"type":"ping","x":"\xed\xa0\x80"}'),
        ("raw", "[]"),
        ("raw", "null"),
        ("raw", "42"),
        ("raw", '"task"'),
        ("raw", "{}"),
        ("raw", '{"type":null,"action":7}'),
        ("raw", "[" * 1000),  # within the size limit, too deep or not JSON
        ("raw", json.dumps({k: v for k, v in task.items() if k != "task_id"})),
        ("raw", json.dumps({**task, "task_id": 7})),
        ("raw", json.dumps({**task, "task_id": ""})),
        ("raw", json.dumps({**task, "task_id": "x" * (MAX_TASK_ID + 1)})),
        ("raw", json.dumps({k: v for k, v in task.items() if k != "task_type"})),
        ("raw", json.dumps({**task, "data": [1, 2]})),
        ("raw", json.dumps({**task, "data": "text"})),
        ("raw", json.dumps({**task, "timeout": -1})),
        ("raw", json.dumps({**task, "timeout": True})),
        ("raw", json.dumps({**task, "timeout": "5"})),
        ("raw", '{"type":"task","task_id":"bad","task_type":"echo","timeout":NaN}'),
        # Above max_message_bytes and no task_id to answer (one that has one is refused: test_delivery).
        ("raw", json.dumps({"type": "task", "task_type": "echo", "data": {"pad": "x" * (2 * SMALL)}})),
        ("raw", json.dumps({"type": "ping", "pad": "y" * SMALL})),
    ]
    if dialect == "go":
        frames += [
            ("raw", json.dumps({"action": "task", "data": "not an object"})),
            ("raw", json.dumps({"action": None, "data": {"x": 1}})),
        ]
    return frames


#: Frames that are odd but valid: no bad_frames, no harm.
HARMLESS = [
    {"type": "something_else", "x": 1},
    {"action": "something_else", "data": {"x": 1}},
    {"type": "pong", "timestamp": 1},
    {"action": "pong", "data": {}, "request_id": "r"},
    {"action": "error", "data": {"code": 1002, "message": "unknown action"}},
    {"action": "error", "data": {"code": 1001, "message": "something odd"}},
]


@pytest.fixture(params=["seed", "go"])
def dialect_hub(request: pytest.FixtureRequest) -> Iterator[LocalHub]:
    with LocalHub(KEY, dialect=request.param) as h:
        yield h


def connected_node(make_node: Any, hub: LocalHub, **overrides: Any) -> NodeWebSocketClient:
    node = make_node(_hub=hub, **overrides)
    assert node.wait_connected(10), node.stats()
    assert hub.wait_connected(node.pc_id, timeout=10)
    return node


def connections_of(hub: LocalHub, pc_id: str) -> list[dict]:
    return [c for c in hub.connections if c["pc_id"] == pc_id]


def assert_same_session(node: NodeWebSocketClient, hub: LocalHub, threads_before: list) -> None:
    conns = connections_of(hub, node.pc_id)
    assert len(conns) == 1 and conns[0]["closed"] is None, conns
    assert node.is_connected()
    assert node.stats()["reconnects"] == 0
    alive = set(node_threads())
    lost = [t.name for t in threads_before if t not in alive]
    assert not lost, f"octohub threads died: {lost}"


@pytest.fixture
def websocket_errors() -> Iterator[list[logging.LogRecord]]:
    """websocket-client logs "error from callback" when on_message raises: collect those."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.ERROR)
    ws_logger = logging.getLogger("websocket")
    ws_logger.addHandler(handler)
    try:
        yield records
    finally:
        ws_logger.removeHandler(handler)


def test_burst_of_bad_frames_then_good_task(
    dialect_hub: LocalHub, make_node: Any, websocket_errors: list[logging.LogRecord]
) -> None:
    hub = dialect_hub
    node = connected_node(make_node, hub, max_message_bytes=SMALL)
    threads_before = node_threads()
    frames = bad_frames(hub.dialect)
    for how, frame in frames:
        if how == "text-bytes":
            send_text_bytes(hub, frame, node.pc_id)  # type: ignore[arg-type]
        else:
            hub.send_raw(frame, pc_id=node.pc_id)
    for message in HARMLESS:
        hub.send_message(message, pc_id=node.pc_id)
    request_id = hub.send_json_ping(node.pc_id)
    tid = hub.send_task("echo", {"after": "the burst"}, pc_id=node.pc_id)
    result = hub.wait_result(tid, 10)
    assert result["status"] == "completed" and result["result"]["echo"] == {"after": "the burst"}
    # One connection thread handles frames in order: every bad frame was seen before the task.
    assert node.stats()["bad_frames"] == len(frames)
    assert node.stats()["tasks_received"] == 1
    assert "bad" not in hub.results
    assert hub.wait_for(lambda: hub.count("pong") >= 1, 5)
    if hub.dialect == "go":
        pongs = [m for m in hub.received if m.get("action") == "pong"]
        assert pongs and pongs[-1].get("request_id") == request_id
    assert_same_session(node, hub, threads_before)
    assert not websocket_errors, [r.getMessage() for r in websocket_errors]


def test_burst_repeated_keeps_counting(make_node: Any, hub: LocalHub) -> None:
    """Many bad frames in a row (no rate limit kicks the node off, nothing leaks into stats)."""
    node = connected_node(make_node, hub)
    threads_before = node_threads()
    for i in range(300):
        hub.send_raw(["{", b"\x00", "[]", '{"type":"task"}'][i % 4], pc_id=node.pc_id)
    assert hub.wait_result(hub.send_task("echo", {"n": 1}, pc_id=node.pc_id), 10)["status"] == "completed"
    assert node.stats()["bad_frames"] == 300
    assert_same_session(node, hub, threads_before)


def test_huge_integers_are_bad_frames(
    dialect_hub: LocalHub, make_node: Any, websocket_errors: list[logging.LogRecord]
) -> None:
    """A 400-digit timeout (no float can hold it) and a 5000-digit number (over Python's
    4300-digit int conversion limit) are bad frames, not exceptions out of the frame callback."""
    hub = dialect_hub
    node = connected_node(make_node, hub)
    threads_before = node_threads()
    hub.send_raw('{"type":"task","task_id":"big","task_type":"echo","timeout":1%s}' % ("0" * 400), pc_id=node.pc_id)
    hub.send_raw('{"type":"ping","n":%s}' % ("1" * 5000), pc_id=node.pc_id)
    assert hub.wait_result(hub.send_task("echo", {}, pc_id=node.pc_id), 10)["status"] == "completed"
    assert node.stats()["bad_frames"] == 2
    assert not websocket_errors, [r.getMessage() for r in websocket_errors]
    assert_same_session(node, hub, threads_before)


def test_lone_surrogates_answered_on_the_same_connection(dialect_hub: LocalHub, make_node: Any) -> None:
    r"""\ud800 is a valid JSON escape; echoing it back must not make the node drop its connection."""
    hub = dialect_hub
    node = connected_node(make_node, hub)
    threads_before = node_threads()
    hub.send_raw('{"type":"task","task_id":"sur1","task_type":"echo","data":{"s":"\\ud800"}}', pc_id=node.pc_id)
    hub.send_raw('{"type":"task","task_id":"sur\\udc80","task_type":"no_such_type"}', pc_id=node.pc_id)
    hub.send_raw('{"action":"ping","request_id":"\\ud800"}', pc_id=node.pc_id)
    assert hub.wait_for(lambda: "sur1" in hub.results and "sur\udc80" in hub.results, 2), \
        (hub.results.keys(), node.stats())
    assert hub.results["sur1"][0]["result"]["echo"] == {"s": "\ud800"}
    assert hub.results["sur\udc80"][0]["status"] == "failed"
    assert hub.wait_result(hub.send_task("echo", {}, pc_id=node.pc_id), 10)["status"] == "completed"
    assert_same_session(node, hub, threads_before)


def test_nesting_near_the_recursion_limit_never_escapes(
    make_node: Any, hub: LocalHub, websocket_errors: list[logging.LogRecord]
) -> None:
    """JSON pings nested around the recursion limit: each is answered or counted as bad, never
    an exception out of the frame callback (websocket-client would log it and skip the count)."""
    node = connected_node(make_node, hub)
    threads_before = node_threads()
    limit = sys.getrecursionlimit()
    depths = range(limit - 80, limit + 5)
    for depth in depths:
        hub.send_raw('{"type":"ping","request_id":%s}' % ("[" * depth + "]" * depth), pc_id=node.pc_id)
    assert hub.wait_result(hub.send_task("echo", {}, pc_id=node.pc_id), 10)["status"] == "completed"
    assert wait_until(lambda: hub.count("pong") + node.stats()["bad_frames"] >= len(depths), 2), \
        (hub.count("pong"), node.stats()["bad_frames"], [r.getMessage()[:200] for r in websocket_errors])
    assert not websocket_errors, [r.getMessage()[:200] for r in websocket_errors]
    assert_same_session(node, hub, threads_before)
