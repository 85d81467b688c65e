"""Tests of octohub_sync.hub.LocalHub with plain HTTP and WebSocket clients (no octohub client)."""
from __future__ import annotations

import email.utils
import json
import logging
import ssl
import struct
import threading
import time
from typing import Any, Callable, Iterator, Optional

import psutil
import pytest
import requests
import trustme
import websocket

from octohub_sync._wire import signing
from octohub_sync.hub import GO_READ_DEADLINE, LocalHub
from octohub_sync.hub.table import ConnectionTable, NodeSession

KEY = "test-key-0123456789abcdef"
VECTOR_KEY = "mySignatureKey123456789012345"
VECTOR_TS = 1632123456
VECTOR_HEADERS = {
    "X-Signature": "9V8vszyC1JvWKUxyFJvHZ1s/QoxXMj3s3pZWI8ABHVY=",
    "X-Timestamp": str(VECTOR_TS),
    "X-Nonce": "1632123456999",
}
#: Bound of every single blocking read in these tests.
IO_TIMEOUT = 5.0

HubFactory = Callable[..., LocalHub]

pytestmark = pytest.mark.timeout(15)


def hub_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("hub-")]


@pytest.fixture
def make_hub() -> Iterator[HubFactory]:
    """Start hubs on demand; stop them all afterwards and check no hub thread survived."""
    hubs: list[LocalHub] = []

    def factory(key: str = KEY, **kwargs: Any) -> LocalHub:
        hub = LocalHub(key, **kwargs).start()
        hubs.append(hub)
        return hub

    yield factory
    for hub in hubs:
        hub.stop()
    assert hub_threads() == []


class Node:
    """A bare WebSocket node: just enough protocol to drive the hub."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.ws = websocket.create_connection(url, timeout=IO_TIMEOUT, **kwargs)
        self.hello = self.recv()

    def recv(self) -> dict:
        return json.loads(self.ws.recv())

    def send(self, message: dict) -> None:
        self.ws.send(json.dumps(message))

    def ready(self, pc_id: str = "") -> None:
        self.send({"type": "node_ready", "pc_id": pc_id, "timestamp": int(time.time())})

    def answer(self, task_id: str, result: Any = "ok") -> None:
        self.send({"type": "task_result", "task_id": task_id, "status": "completed", "result": result})

    def recv_task(self) -> dict:
        """The next task message, skipping the hub's other messages (go errors, pongs)."""
        while True:
            message = self.recv()
            if message.get("type") == "task":
                return message

    def close(self) -> None:
        self.ws.close(timeout=1)


def signed_get(hub: LocalHub, params: Optional[dict] = None, **kwargs: Any) -> requests.Response:
    params = {"pc_id": "node_a"} if params is None else params
    headers = signing.api_headers(hub.key, "GET", "/node/ws", params)
    kwargs.setdefault("timeout", IO_TIMEOUT)
    return requests.get(f"{hub.api_url}/node/ws", params=params, headers=headers, **kwargs)


def connect(hub: LocalHub, pc_id: str = "node_a", *, ready: bool = True) -> Node:
    node = Node(hub.ws_url(pc_id))
    if ready:
        node.ready(pc_id)
        assert hub.wait_connected(pc_id, timeout=IO_TIMEOUT)
    return node


def handshake_error(url: str) -> websocket.WebSocketBadStatusException:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        websocket.create_connection(url, timeout=IO_TIMEOUT)
    return info.value


def assert_aborted(node: Node) -> None:
    """The hub closed TCP without a close frame."""
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        node.recv()


# -- API server ---------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["seed", "go"])
def test_signed_api_request_gives_a_working_ws_url(make_hub: HubFactory, dialect: str) -> None:
    hub = make_hub(dialect=dialect)
    response = signed_get(hub)
    assert response.status_code == 200
    body = response.json()
    assert body["errcode"] == 0
    url = body["data"]["wsUrl"]
    assert url.startswith(f"ws://127.0.0.1:{hub.ws_port}/ws/node?pc_id=node_a&timestamp=")

    node = Node(url)
    if dialect == "seed":
        assert node.hello["type"] == "connected" and node.hello["pc_id"] == "node_a"
        assert node.hello["session_id"] and isinstance(node.hello["server_time"], int)
    else:
        assert node.hello["action"] == "connected" and node.hello["data"]["pc_id"] == "node_a"
        assert {"session_id", "server_time"} <= set(node.hello["data"]) and "timestamp" in node.hello
    node.ready("node_a")
    assert hub.wait_connected("node_a", timeout=IO_TIMEOUT)
    if dialect == "go":  # the Go server does not know node_ready and says so
        error = node.recv()
        assert error["action"] == "error" and error["data"]["code"] == 1002
    assert hub.api_requests[0]["status"] == 200 and hub.api_requests[0]["params"] == {"pc_id": "node_a"}
    node.close()


def test_protocol_vector_is_accepted_at_its_time_and_not_replayed(make_hub: HubFactory) -> None:
    hub = make_hub(VECTOR_KEY, clock_offset=VECTOR_TS - time.time())
    url = f"{hub.api_url}/node/ws?pc_id=node_abc123def456"
    response = requests.get(url, headers=VECTOR_HEADERS, timeout=IO_TIMEOUT)
    assert response.status_code == 200, response.text
    hub_date = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
    assert abs(hub_date - VECTOR_TS) < 10
    ws_url = response.json()["data"]["wsUrl"]
    assert f"timestamp={VECTOR_TS}" in ws_url or abs(int(ws_url.split("timestamp=")[1][:10]) - VECTOR_TS) < 10
    Node(ws_url).close()  # the hub's own URL is valid at the hub's (skewed) time

    replay = requests.get(url, headers=VECTOR_HEADERS, timeout=IO_TIMEOUT)
    assert replay.status_code == 401 and replay.json()["errcode"] == 401
    forged = {**VECTOR_HEADERS, "X-Signature": "A" + VECTOR_HEADERS["X-Signature"][1:], "X-Nonce": "other"}
    assert requests.get(url, headers=forged, timeout=IO_TIMEOUT).status_code == 401
    assert [r["status"] for r in hub.api_requests] == [200, 401, 401]
    assert hub.api_requests[0]["time"] <= hub.api_requests[1]["time"] <= time.monotonic()


def test_api_rejects_stale_unsigned_and_malformed_requests(make_hub: HubFactory) -> None:
    hub = make_hub()
    stale = signing.api_headers(KEY, "GET", "/node/ws", {"pc_id": "n"}, timestamp=int(time.time()) - 301)
    assert requests.get(f"{hub.api_url}/node/ws", params={"pc_id": "n"}, headers=stale).status_code == 401
    assert requests.get(f"{hub.api_url}/node/ws", params={"pc_id": "n"}).status_code == 401
    missing = signed_get(hub, params={})
    assert missing.status_code == 400 and missing.json()["errcode"] == 400
    assert requests.get(f"{hub.api_url}/elsewhere").status_code == 404


def test_ws_url_host_is_what_the_api_hands_out(make_hub: HubFactory) -> None:
    hub = make_hub(ws_url_host="localhost")
    assert signed_get(hub).json()["data"]["wsUrl"].startswith(f"ws://localhost:{hub.ws_port}/ws/node?")


def test_api_faults(make_hub: HubFactory) -> None:
    hub = make_hub()
    hub.api_fault = "401"
    response = signed_get(hub)
    assert response.status_code == 401
    assert response.json() == {"errcode": 401, "errmsg": "signature verification failed"}
    hub.api_fault = "500"
    response = signed_get(hub)
    assert response.status_code == 500 and response.json()["errcode"] != 0
    hub.api_fault = "html"
    response = signed_get(hub)
    assert response.status_code == 502 and response.text.startswith("<html")
    hub.api_fault = "garbage"
    response = signed_get(hub)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    hub.api_fault = "timeout"
    with pytest.raises(requests.exceptions.ReadTimeout):
        signed_get(hub, timeout=0.3)
    assert hub.api_requests[-1]["status"] == 0
    hub.api_fault = None
    assert signed_get(hub).status_code == 200
    with pytest.raises(ValueError):
        hub.api_fault = "teapot"


def test_stop_releases_a_request_held_by_the_timeout_fault(make_hub: HubFactory) -> None:
    hub = make_hub()
    hub.api_fault = "timeout"
    outcome: list[Any] = []

    def call() -> None:
        try:
            outcome.append(signed_get(hub))
        except requests.RequestException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert hub.wait_for(lambda: len(hub.api_requests) == 1, timeout=IO_TIMEOUT)
    started = time.monotonic()
    hub.stop()
    assert time.monotonic() - started < 2.0
    caller.join(IO_TIMEOUT)
    assert isinstance(outcome[0], requests.ConnectionError)  # closed without an answer
    hub.stop()  # idempotent


# -- WebSocket handshake ------------------------------------------------------


def test_ws_handshake_rejections(make_hub: HubFactory) -> None:
    hub = make_hub()
    base = f"ws://127.0.0.1:{hub.ws_port}/ws/node"
    missing = handshake_error(f"{base}?pc_id=node_a")
    assert missing.status_code == 400 and json.loads(missing.resp_body) == {"error": "缺少必要参数"}
    bad = handshake_error(f"{base}?pc_id=node_a&timestamp={int(time.time())}&signature=00ff")
    assert bad.status_code == 401 and json.loads(bad.resp_body) == {"error": "签名验证失败"}
    old = signing.ws_query(KEY, "node_a", timestamp=int(time.time()) - 301)
    assert handshake_error(f"{base}?{old}").status_code == 401
    assert handshake_error(f"ws://127.0.0.1:{hub.ws_port}/other?{old}").status_code == 404
    assert hub.handshakes_rejected == 4
    future = signing.ws_query(KEY, "node_a", timestamp=int(time.time()) + 3600)
    Node(f"{base}?{future}").close()  # the Go server accepts timestamps from the future
    assert hub.connections and hub.connections[0]["pc_id"] == "node_a"


def test_ws_faults(make_hub: HubFactory) -> None:
    hub = make_hub()
    hub.ws_fault = "401"
    error = handshake_error(hub.ws_url("node_a"))
    assert error.status_code == 401 and json.loads(error.resp_body) == {"error": "签名验证失败"}
    hub.ws_fault = "500"
    assert handshake_error(hub.ws_url("node_a")).status_code == 500
    hub.ws_fault = None
    connect(hub).close()


# -- tasks and messages -------------------------------------------------------


def test_send_task_records_every_result(make_hub: HubFactory) -> None:
    hub = make_hub()
    node = connect(hub)
    task_id = hub.send_task("echo", {"x": 1}, timeout=5, extra={"priority": 3})
    task = node.recv_task()
    assert task == {
        "type": "task", "task_id": task_id, "task_type": "echo", "data": {"x": 1}, "timeout": 5, "priority": 3
    }
    assert hub.pending == [task_id]
    node.answer(task_id, {"echo": {"x": 1}})
    node.answer(task_id, "again")  # a duplicate is recorded, not hidden
    assert hub.wait_result(task_id)["result"] == {"echo": {"x": 1}}
    assert hub.wait_for(lambda: len(hub.results[task_id]) == 2, timeout=IO_TIMEOUT)
    assert hub.count("task_result") == 2 and hub.count("node_ready") == 1
    assert hub.received[-1]["_pc_id"] == "node_a" and hub.pending == []
    with pytest.raises(TimeoutError, match="never"):
        hub.wait_result("never", timeout=0.05)
    node.close()


def test_pending_tasks_are_delivered_and_redelivered_on_node_ready(make_hub: HubFactory) -> None:
    hub = make_hub()
    queued = hub.send_task("echo", task_id="queued")  # no node yet: waits for the first node_ready
    first = connect(hub, ready=False)
    first.ready("node_a")
    assert first.recv_task()["task_id"] == "queued"
    in_flight = hub.send_task("echo", task_id="in_flight")
    assert first.recv_task()["task_id"] == in_flight
    assert hub.drop("node_a") == 1
    assert_aborted(first)
    assert not hub.connected("node_a")
    later = hub.send_task("echo", task_id="later")  # sent while the node is away
    second = connect(hub, ready=False)
    second.ready("node_a")
    assert {second.recv_task()["task_id"] for _ in range(3)} == {queued, in_flight, later}
    for task_id in (queued, in_flight, later):
        second.answer(task_id)
        hub.wait_result(task_id)
    assert hub.pending == []
    second.close()


def test_without_redelivery_tasks_sent_to_a_dead_link_are_lost(make_hub: HubFactory) -> None:
    hub = make_hub(redeliver=False)
    first = connect(hub)
    lost = hub.send_task("echo", task_id="lost")
    assert first.recv_task()["task_id"] == lost
    hub.drop()
    never_sent = hub.send_task("echo", task_id="never_sent", pc_id="node_a")
    second = connect(hub, ready=False)
    second.ready("node_a")
    assert second.recv_task()["task_id"] == never_sent
    second.answer(never_sent)
    hub.wait_result(never_sent)
    assert hub.pending == [lost]
    second.close()


def test_json_ping_pong_and_frames_that_are_not_json_objects(make_hub: HubFactory) -> None:
    hub = make_hub(dialect="go")
    node = connect(hub)
    assert node.recv()["action"] == "error"  # reply to node_ready
    request_id = hub.send_json_ping()
    assert request_id and node.recv() == {"action": "ping", "request_id": request_id}
    node.send({"action": "pong", "request_id": request_id})  # known to the Go server: no error
    node.ws.send("not json")
    node.ws.send("[1, 2]")
    node.send({"action": "ping", "request_id": "r1"})
    pong = node.recv()
    assert pong["action"] == "pong" and pong["request_id"] == "r1"
    assert [m.get("action") for m in hub.received] == [None, "pong", "ping"]
    hub.send_raw(b"\x00\x01")
    assert node.ws.recv_data()[1] == b"\x00\x01"
    with pytest.raises(ConnectionError):
        hub.send_message({"type": "x"}, pc_id="nobody")
    node.close()


def test_seed_json_ping(make_hub: HubFactory) -> None:
    hub = make_hub()
    node = connect(hub)
    assert hub.send_json_ping("node_a") == ""
    assert node.recv() == {"type": "ping"}
    node.close()


def test_send_task_is_thread_safe_under_load(make_hub: HubFactory) -> None:
    hub = make_hub()
    node = connect(hub)

    def echo() -> None:
        try:
            for frame in iter(node.ws.recv, ""):  # "" once the close handshake started
                task = json.loads(frame)
                node.answer(task["task_id"], task["data"])
        except (websocket.WebSocketException, OSError):
            pass  # the test closed the node

    responder = threading.Thread(target=echo)
    responder.start()
    def send_many() -> None:
        for i in range(250):
            hub.send_task("echo", {"i": i})

    senders = [threading.Thread(target=send_many) for _ in range(8)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(IO_TIMEOUT)
    assert hub.wait_for(lambda: len(hub.results) == 2000, timeout=8.0)
    assert all(len(results) == 1 for results in hub.results.values())
    node.close()
    responder.join(IO_TIMEOUT)


# -- connections --------------------------------------------------------------


def test_second_connection_with_same_pc_id_replaces_the_first(make_hub: HubFactory) -> None:
    hub = make_hub()
    old = connect(hub)
    new = connect(hub, ready=False)
    notice = old.recv()
    assert notice["type"] == "disconnect_notification" and notice["reason"]
    assert_aborted(old)
    assert hub.wait_for(lambda: hub.connections[0]["closed"] is not None, timeout=IO_TIMEOUT)
    assert hub.connected("node_a") and hub.connections[1]["closed"] is None
    assert hub.forgotten == []  # the seed hub removes only the connection that ended
    new.close()


def test_go_server_replaces_silently(make_hub: HubFactory) -> None:
    hub = make_hub(dialect="go", notify_replaced=False)
    old = connect(hub)
    assert old.recv()["action"] == "error"
    new = connect(hub, ready=False)
    assert_aborted(old)
    # The old connection's cleanup then removes the pc_id's entry: see the tests below.
    assert hub.wait_for(lambda: hub.forgotten == hub.connections[1:], timeout=IO_TIMEOUT)
    new.close()


def test_go_notice_of_replacement(make_hub: HubFactory) -> None:
    hub = make_hub(dialect="go")
    old = connect(hub, ready=False)
    connect(hub, ready=False).close()
    notice = {"action": "disconnected", "data": {"reason": "新连接建立", "code": 1000}, "from": "system"}
    assert old.recv() == notice


def assert_open(node: Node, payload: str = "alive") -> None:
    """The (go) hub still answers a JSON ping, and nothing else came before its pong.

    Not a ping frame: the go dialect's hub crashes on one that meets its own write, as the Go server does.
    """
    node.send({"action": "ping", "request_id": payload})
    pong = node.recv()
    assert pong["action"] == "pong" and pong["request_id"] == payload, pong


def test_go_cleanup_of_a_replaced_connection_forgets_the_newer_one(make_hub: HubFactory) -> None:
    hub = make_hub(dialect="go")
    old = connect(hub, ready=False)
    new = connect(hub, ready=False)  # evicts old, whose cleanup then runs after new registered
    assert old.recv()["action"] == "disconnected"
    assert_aborted(old)
    assert hub.wait_for(lambda: hub.connections[0]["closed"] is not None, timeout=IO_TIMEOUT)
    new_record = hub.connections[1]
    assert hub.forgotten == [new_record] and new_record["closed"] is None  # open, but unknown to the hub
    assert not hub.connected("node_a") and not hub.connected()
    task_id = hub.send_task("echo", pc_id="node_a")
    new.ready("node_a")
    assert new.recv()["action"] == "error"  # the Go answer to node_ready, and no task before it
    new.send({"action": "ping", "request_id": "r1"})
    assert new.recv()["action"] == "pong"
    assert_open(new)
    assert hub.pending == [task_id] and hub.count("node_ready") == 1
    with pytest.raises(ConnectionError):
        hub.send_message({"action": "ping"}, pc_id="node_a")
    new.close()
    assert hub.wait_for(lambda: new_record["closed"] is not None, timeout=IO_TIMEOUT)
    again = connect(hub)  # connect() waits until the hub knows it
    assert again.recv_task()["task_id"] == task_id
    again.answer(task_id)
    assert hub.wait_result(task_id)["status"] == "completed"
    assert hub.forgotten == [new_record] and hub.pending == []
    again.close()


def test_go_end_of_a_forgotten_connection_forgets_the_next_one(make_hub: HubFactory) -> None:
    hub = make_hub(dialect="go", notify_replaced=False)
    first = connect(hub, ready=False)
    second = connect(hub, ready=False)
    assert_aborted(first)
    assert hub.wait_for(lambda: len(hub.forgotten) == 1, timeout=IO_TIMEOUT)
    third = connect(hub)  # the table has no entry: nobody is evicted, second stays open beside it
    assert third.recv()["action"] == "error"
    assert_open(second)
    second.close()  # its cleanup removes the pc_id's entry, which is third's
    assert hub.wait_for(lambda: len(hub.forgotten) == 2, timeout=IO_TIMEOUT)
    assert hub.forgotten == hub.connections[1:] and hub.connections[2]["closed"] is None
    assert not hub.connected("node_a")
    task_id = hub.send_task("echo", pc_id="node_a")
    assert_open(third)  # the pong is the next frame: the task did not go out
    assert hub.pending == [task_id]
    third.close()


@pytest.mark.parametrize("remove_by_pc_id", [False, True])
def test_connection_table_rules_without_sockets(remove_by_pc_id: bool) -> None:
    table = ConnectionTable(remove_by_pc_id=remove_by_pc_id)
    old, new = NodeSession("node_a", ws=None), NodeSession("node_a", ws=None)
    assert table.add(old) is None
    assert table.add(new) is old  # the caller evicts it
    if remove_by_pc_id:  # Go: the end of the old connection removes the entry, which is new's
        assert table.remove(old) is new and new.forgotten
        assert table.known("node_a") == [] and table.target(None) is None
    else:
        assert table.remove(old) is None and not new.forgotten
        assert table.known("node_a") == [new] and table.target(None) is new
    assert table.open_sessions() == [new]
    assert table.remove(new) is None and table.open_sessions() == [] and table.known() == []


def test_read_deadline_depends_on_the_dialect(make_hub: HubFactory) -> None:
    assert LocalHub(KEY, dialect="go").read_deadline == GO_READ_DEADLINE == 60
    assert LocalHub(KEY).read_deadline is None
    assert LocalHub(KEY, read_deadline=2.5).read_deadline == 2.5
    assert LocalHub(KEY, dialect="go", read_deadline=2.5).read_deadline == 2.5
    assert LocalHub(KEY, dialect="go", read_deadline=0).read_deadline is None
    assert LocalHub(KEY, dialect="go", read_deadline=None).read_deadline is None
    with pytest.raises(ValueError, match="read_deadline"):
        LocalHub(KEY, read_deadline=-1)
    make_hub(dialect="go")
    assert [t.name for t in hub_threads()].count("hub-ws-deadline") == 1


def test_read_deadline_also_drops_a_forgotten_connection(make_hub: HubFactory) -> None:
    hub = make_hub(dialect="go", read_deadline=1.0, notify_replaced=False)
    old = connect(hub, ready=False)
    new = connect(hub, ready=False)
    assert_aborted(old)
    assert hub.wait_for(lambda: len(hub.forgotten) == 1, timeout=IO_TIMEOUT)
    assert hub.wait_for(lambda: hub.forgotten[0]["closed"] is not None, timeout=IO_TIMEOUT)
    assert_aborted(new)


def test_read_deadline_drops_silent_nodes_and_keeps_pinging_ones(make_hub: HubFactory) -> None:
    # A deadline five times the pinger's interval: a loaded machine may delay one pong, not four.
    hub = make_hub(dialect="go", read_deadline=1.0)
    silent = connect(hub, "silent", ready=False)
    pinging = connect(hub, "pinging", ready=False)
    stop = threading.Event()

    def ping() -> None:  # unsolicited pong frames: they keep the Go server's deadline and make it write nothing
        while not stop.wait(0.2):
            pinging.ws.pong("")

    pinger = threading.Thread(target=ping)
    pinger.start()
    try:
        opened = time.monotonic()
        assert hub.wait_for(lambda: not hub.connected("silent"), timeout=5.0)
        assert time.monotonic() - opened >= 0.9
        assert_aborted(silent)
        # Two more deadlines pass; the pinging node must survive them.
        assert not hub.wait_for(lambda: not hub.connected("pinging"), timeout=2.0)
    finally:
        stop.set()
        pinger.join(IO_TIMEOUT)
    pinging.close()


def test_stop_ws_and_start_ws_reuse_the_port_and_keep_state(make_hub: HubFactory) -> None:
    hub = make_hub()
    node = connect(hub)
    task_id = hub.send_task("echo")
    assert node.recv_task()["task_id"] == task_id
    port = hub.ws_port
    hub.stop_ws()
    assert_aborted(node)
    assert not hub.connected()
    with pytest.raises(OSError):
        websocket.create_connection(hub.ws_url("node_a"), timeout=IO_TIMEOUT)
    assert signed_get(hub).status_code == 200  # the API keeps running
    hub.start_ws()
    assert hub.ws_port == port
    node = connect(hub)
    assert node.recv_task()["task_id"] == task_id
    assert len(hub.connections) == 2 and hub.count("node_ready") == 2
    node.close()


def test_drop_and_close(make_hub: HubFactory) -> None:
    hub = make_hub()
    assert hub.drop() == 0
    node = connect(hub)
    frames: list[tuple[int, bytes]] = []

    def read_close() -> None:
        # hub.close_connections() waits for the node to answer the close frame and close TCP, as a real node does.
        frames.append(node.ws.recv_data(control_frame=True))
        node.ws.shutdown()

    reader = threading.Thread(target=read_close)
    reader.start()
    started = time.monotonic()
    assert hub.close_connections("node_a", code=4000) == 1
    assert time.monotonic() - started < 1.0
    reader.join(IO_TIMEOUT)
    opcode, data = frames[0]
    assert opcode == websocket.ABNF.OPCODE_CLOSE and struct.unpack("!H", data[:2])[0] == 4000
    assert not hub.connected()
    assert hub.connections[0]["close_code"] == 1000  # what the node answered (websocket-client: 1000)
    a, b = connect(hub, "a"), connect(hub, "b")
    assert hub.drop() == 2 and not hub.connected()
    assert_aborted(a)
    assert_aborted(b)
    assert [c["close_code"] for c in hub.connections[1:]] == [1006, 1006]


def test_tls_for_api_and_websocket(make_hub: HubFactory) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)
    hub = make_hub(ssl_context=server_ctx)
    assert hub.api_url.startswith("https://")
    with ca.cert_pem.tempfile() as ca_file:
        response = signed_get(hub, verify=ca_file)
    url = response.json()["data"]["wsUrl"]
    assert url.startswith("wss://")
    node = Node(url, sslopt={"context": client_ctx})
    assert node.hello["type"] == "connected"
    node.ready("node_a")
    task_id = hub.send_task("echo")
    node.answer(node.recv_task()["task_id"])
    assert hub.wait_result(task_id)["status"] == "completed"
    node.close()


def test_no_secret_reaches_the_logs(make_hub: HubFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hub = make_hub()
    response = signed_get(hub)
    node = Node(response.json()["data"]["wsUrl"])
    node.ready("node_a")
    assert hub.wait_connected("node_a", timeout=IO_TIMEOUT)
    handshake_error(f"ws://127.0.0.1:{hub.ws_port}/ws/node?pc_id=node_a&timestamp=1&signature=feedface")
    node.close()
    signature = response.json()["data"]["wsUrl"].split("signature=")[1]
    sent_signature = hub.api_requests[0]["headers"]["X-Signature"]
    assert "signature=***" in caplog.text  # websockets' request lines are logged, redacted
    for secret in (KEY, signature, sent_signature, "feedface"):
        assert secret not in caplog.text


def test_start_failure_leaves_no_thread(make_hub: HubFactory) -> None:
    hub = make_hub()
    clash = LocalHub(KEY, ws_port=hub.ws_port)
    with pytest.raises(OSError):
        clash.start()
    assert [t.name for t in hub_threads() if t.name == "hub-api"] == ["hub-api"]  # only the first hub's
    clash.stop()


def test_a_restarted_hub_never_reuses_a_task_id_a_node_with_a_ledger_finished(make_hub: HubFactory, make_node,
                                                                                tmp_path) -> None:
    # A node with a ledger answers a task id it finished before with the stored result, without
    # running the handler: a new hub's tasks must not look like the old hub's.
    runs: list[str] = []

    def serve(hub: LocalHub) -> str:
        client = make_node(_hub=hub, _start=False, state_dir=str(tmp_path), pc_id="node_ledger")
        client.register_task_handler("count", lambda task: runs.append(task["task_id"]) or len(runs))
        client.start()
        result = hub.wait_result(hub.send_task("count"), timeout=10)
        assert client.stop(timeout=5)
        return result["task_id"]

    first, second = serve(make_hub()), serve(make_hub())
    assert first != second and runs == [first, second]


def test_a_stopped_hub_leaves_no_descriptor_open() -> None:
    """websockets' own wake-up pair is closed too (an unclosed socket is a ResourceWarning under -X dev)."""
    process = psutil.Process()
    LocalHub(KEY).start().stop()  # the first start loads what stays loaded (modules, the DNS resolver)
    before = process.num_fds()
    for _ in range(3):
        LocalHub(KEY).start().stop()
    assert process.num_fds() == before
