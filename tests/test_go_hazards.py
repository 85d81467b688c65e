"""The real Go server's crash, reproduced by the local hub's go dialect, and a node that never triggers it.

The Go server answers a node's ping frame from the goroutine that reads while its writer may be
writing; gorilla/websocket panics on the second writer and the whole server process ends
(docs/protocol.md §4). The local hub's go dialect ends its WebSocket server the same way
(hub/go_writer.py), so a node that would crash the real server fails these tests.
"""
from __future__ import annotations

import json
import socket
import time
from typing import Iterator

import pytest
import websocket

from octohub_sync.hub import LocalHub
from octohub_sync.hub.go_writer import CRASH_WINDOW

from .conftest import KEY, wait_until

IO_TIMEOUT = 5.0


@pytest.fixture
def go_hub() -> Iterator[LocalHub]:
    with LocalHub(KEY, dialect="go") as hub:
        yield hub


def raw_node(hub: LocalHub, pc_id: str) -> websocket.WebSocket:
    """A bare WebSocket client that has read the hub's ``connected``."""
    ws = websocket.create_connection(hub.ws_url(pc_id), timeout=IO_TIMEOUT)
    assert json.loads(ws.recv())["action"] == "connected"
    return ws


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT).close()
        return True
    except OSError:
        return False


def test_the_former_node_a_ping_frame_after_results_crashes_the_go_hub(go_hub: LocalHub) -> None:
    """What the node did before: results, then a ping frame asking for their confirmation."""
    bystander = raw_node(go_hub, "node_bystander")
    former = raw_node(go_hub, "node_former")
    former.send(json.dumps({"type": "node_ready", "pc_id": "node_former", "timestamp": int(time.time())}))
    former.send(json.dumps({"type": "task_result", "task_id": "t1", "status": "completed", "result": 1}))
    former.ping(b"octohub-ack:1")
    assert go_hub.wait_for(lambda: go_hub.crashes != [], IO_TIMEOUT)
    [crash] = go_hub.crashes
    assert crash["pc_id"] == "node_former" and crash["why"] == "concurrent write to websocket connection"
    # Every connection dropped without a close frame, the listener gone: as the Go process ending.
    for ws in (bystander, former):
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            while True:  # the frames the hub had written before it died, then the end
                ws.recv()
    assert go_hub.wait_for(lambda: all(c["closed"] is not None for c in go_hub.connections), IO_TIMEOUT)
    assert all(c["close_code"] == 1006 for c in go_hub.connections)  # no close frame came
    assert not listening(go_hub.ws_port)
    go_hub.start_ws()  # the operator restarts it
    raw_node(go_hub, "node_bystander").close()


def test_a_ping_frame_that_meets_no_write_is_answered(go_hub: LocalHub) -> None:
    """The rule is the real one: the crash needs a write under way, not just any ping frame."""
    ws = raw_node(go_hub, "node_quiet")
    [session] = go_hub.sessions("node_quiet")
    assert wait_until(lambda: not session.ws.writer.meets_write(), CRASH_WINDOW + IO_TIMEOUT)
    ws.ping(b"hello")
    assert ws.recv_data(control_frame=True) == (websocket.ABNF.OPCODE_PONG, b"hello")
    assert go_hub.crashes == []
    ws.close()


def test_the_node_never_sends_a_ping_frame_to_the_go_hub(make_node, go_hub: LocalHub) -> None:
    """Bursts of results, frequent keep-alives: no ping frame, no crash, every result confirmed."""
    client = make_node(_hub=go_hub, ping_interval=0.3, ping_timeout=0.2)
    assert client.wait_connected(10)
    for burst in range(5):
        ids = [go_hub.send_task("echo", {"burst": burst, "n": n}) for n in range(20)]
        for task_id in ids:
            assert go_hub.wait_result(task_id, 10)["status"] == "completed"
    assert wait_until(lambda: client.delivery.unconfirmed() == 0, 10), client.delivery.unconfirmed()
    assert go_hub.wait_for(lambda: go_hub.frames("pong") >= 2, 5)  # the keep-alive: unsolicited pongs
    assert go_hub.crashes == [] and go_hub.frames("ping") == 0
    assert client.stats()["reconnects"] == 0 and len(go_hub.connections) == 1
    assert all(len(results) == 1 for results in go_hub.results.values())


def test_a_lost_json_pong_only_delays_a_confirmation(make_node, go_hub: LocalHub) -> None:
    """The Go server's full queue drops answers: a confirmation is asked again, no result is lost."""
    client = make_node(_hub=go_hub)
    assert client.wait_connected(10)
    go_hub.skip_pongs(2)  # the next two confirmations' answers are dropped
    task_id = go_hub.send_task("echo", {"n": 1})
    assert go_hub.wait_result(task_id)["status"] == "completed"

    def acks() -> list[str]:
        return [m["request_id"] for m in go_hub.received
                if m.get("action") == "ping" and str(m.get("request_id")).startswith("octohub-ack:")]

    # Both: the hub may read the result before the node counts it as unconfirmed, so "none unconfirmed"
    # alone could hold before the first confirmation was even asked.
    assert wait_until(lambda: len(acks()) >= 3 and client.delivery.unconfirmed() == 0, 10), \
        (acks(), client.delivery.unconfirmed())
    assert len(go_hub.results[task_id]) == 1 and client.stats()["reconnects"] == 0
    assert go_hub.frames("ping") == 0 and go_hub.crashes == []


def test_the_go_hub_queue_drops_what_finds_it_full(go_hub: LocalHub) -> None:
    """A node that does not read: past 256 queued messages the Go server drops, and so does the hub."""
    ws = websocket.create_connection(go_hub.ws_url("node_deaf"), timeout=IO_TIMEOUT,
                                     sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    assert go_hub.wait_for(lambda: go_hub.connected("node_deaf"), IO_TIMEOUT)  # registered after the upgrade
    [session] = go_hub.sessions("node_deaf")
    big = "x" * 65536
    for n in range(300):
        go_hub.send_raw(json.dumps({"action": "note", "n": n, "pad": big}), pc_id="node_deaf")
    assert session.ws.writer.dropped > 0
    ws.close()
