"""The Go server forgets a node after a dead path; the node re-registers (OCTOHUB_HUB_READ_TIMEOUT).

The local hub in the go dialect keeps the Go server's connection table: when a
connection ends, its pc_id's entry is removed whatever connection it holds. A
path that dies silently leaves the old connection open at the hub; the node
reconnects at once, and the old connection's cleanup then forgets the new one.
"""
from __future__ import annotations

import logging
import threading
import time
import urllib.request
from typing import Any, Iterator

import pytest

from octohub_sync import NodeWebSocketClient
from octohub_sync.hub import LocalHub
from octohub_sync._node.reconnect import reregister_margin

from .conftest import KEY, free_port
from .proxy import StallProxy

#: The hub's read deadline in these tests (seconds); the node is told the same. Longer than the node
#: takes to notice the dead path and reconnect (about 1.3 s with the pings below), as in production
#: (60 s against 30 + 10 s), so that the old connection's cleanup comes after the new registration.
READ_TIMEOUT = 2.5


@pytest.fixture
def go_hub() -> Iterator[LocalHub]:
    with LocalHub(KEY, dialect="go", read_deadline=READ_TIMEOUT) as hub:
        yield hub


@pytest.fixture
def proxy(go_hub: LocalHub) -> Iterator[StallProxy]:
    p = StallProxy(go_hub.ws_port)
    yield p
    p.close()


def behind_proxy(make_node: Any, hub: LocalHub, proxy: StallProxy, **opts: Any) -> NodeWebSocketClient:
    client = make_node(_hub=hub, connect_mode="direct", ws_port=proxy.port, ping_interval=0.3,
                       ping_timeout=0.2, **opts)
    assert client.wait_connected(10)
    assert hub.wait_connected(client.pc_id, 10)
    return client


def become_ghost(client: NodeWebSocketClient, hub: LocalHub, proxy: StallProxy) -> float:
    """Kill the path silently; return when the hub has forgotten the node's new connection."""
    proxy.stall()
    stalled = time.monotonic()
    # The node sees no pong and reconnects through a fresh path; the hub replaces the old connection,
    # whose cleanup then removes the pc_id's entry: the new connection's.
    assert hub.wait_for(lambda: len(hub.forgotten) == 1, 10), hub.connections
    assert client.wait_connected(10) and client.stats()["reconnects"] == 1
    assert not hub.connected(client.pc_id)
    return stalled


def test_without_reregistration_the_node_stays_a_ghost(make_node, go_hub: LocalHub, proxy: StallProxy) -> None:
    client = behind_proxy(make_node, go_hub, proxy, hub_read_timeout=0)
    become_ghost(client, go_hub, proxy)
    tid = go_hub.send_task("echo")
    # Well past the time the node with re-registration takes: the task never arrives, and the node
    # believes it is connected (its pings are answered).
    patience = READ_TIMEOUT + reregister_margin(READ_TIMEOUT) + 2.0
    assert not go_hub.wait_for(lambda: tid in go_hub.results, patience)
    assert client.is_connected() and client.stats()["reregistrations"] == 0
    assert tid in go_hub.pending


def test_node_reregisters_and_is_reachable_again(make_node, go_hub: LocalHub, proxy: StallProxy, caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    port = free_port()
    client = behind_proxy(make_node, go_hub, proxy, hub_read_timeout=READ_TIMEOUT, metrics_port=port)
    stalled = become_ghost(client, go_hub, proxy)
    tid = go_hub.send_task("echo", {"after": "the ghost"})
    assert go_hub.wait_result(tid, 15)["result"]["echo"] == {"after": "the ghost"}
    reachable_after = time.monotonic() - stalled
    # Missing pong (ping interval + timeout + 1 s), then the read deadline plus the margin.
    assert reachable_after < 1.5 + READ_TIMEOUT + reregister_margin(READ_TIMEOUT) + 3.0, reachable_after
    assert client.stats()["reregistrations"] == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert f'octohub_node_reregistrations_total{{pc_id="{client.pc_id}"}} 1' in response.read().decode()
    assert go_hub.connected(client.pc_id)
    assert any("re-registering" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
    # Break before make: the ghost connection's close handshake ended before the next one opened.
    ghost, fresh = go_hub.connections[-2:]
    assert ghost["close_code"] == 1000 and ghost["closed"] <= fresh["opened"]


def test_clean_closes_schedule_no_reregistration(make_node, go_hub: LocalHub) -> None:
    client = make_node(_hub=go_hub, hub_read_timeout=READ_TIMEOUT, ping_interval=0.3, ping_timeout=0.2)
    assert client.wait_connected(10)
    go_hub.close_connections(client.pc_id)  # a close handshake: the hub cleaned up before we reconnect
    assert go_hub.wait_for(lambda: len(go_hub.connections) == 2 and go_hub.connected(client.pc_id), 10)
    # Longer than a re-registration would take: the second connection stays.
    assert not go_hub.wait_for(lambda: len(go_hub.connections) > 2, READ_TIMEOUT + reregister_margin(READ_TIMEOUT) + 1)
    assert client.stats()["reregistrations"] == 0


def test_replaced_notice_closes_with_a_handshake_before_reconnecting(make_node, go_hub: LocalHub) -> None:
    client = make_node(_hub=go_hub, ping_interval=0.3, ping_timeout=0.2)
    assert client.wait_connected(10)
    go_hub.send_message({"action": "disconnected", "data": {"reason": "新连接建立", "code": 1000}, "from": "system"})
    assert go_hub.wait_for(lambda: len(go_hub.connections) == 2 and go_hub.connected(client.pc_id), 10)
    first, second = go_hub.connections
    assert first["close_code"] == 1000 and first["closed"] <= second["opened"]
    assert not go_hub.forgotten


def test_a_hub_that_cleans_up_after_its_close_reply_keeps_the_reregistered_node(
        make_node, go_hub: LocalHub, proxy: StallProxy, monkeypatch) -> None:
    # The Go server answers the close frame, then removes the pc_id from its table: a node that
    # registered again in between would be forgotten. Here that cleanup takes a (slow) 0.3 s.
    detach = go_hub._state.detach
    slow = threading.Event()
    monkeypatch.setattr(go_hub._state, "detach", lambda session: (slow.wait(0.3), detach(session)))
    client = behind_proxy(make_node, go_hub, proxy, hub_read_timeout=READ_TIMEOUT)
    become_ghost(client, go_hub, proxy)
    assert go_hub.wait_for(lambda: client.stats()["reregistrations"] == 1 and len(go_hub.connections) == 3
                           and go_hub.connections[1]["closed"] is not None, 15)
    closed, fresh = go_hub.connections[1:]
    assert closed["close_code"] == 1000 and fresh["opened"] > closed["closed"], (closed, fresh)
    assert len(go_hub.forgotten) == 1  # the ghost's connection only, not the one after the re-registration
    tid = go_hub.send_task("echo", {"after": "the re-registration"})
    assert go_hub.wait_result(tid, 10)["result"]["echo"] == {"after": "the re-registration"}


def test_a_node_whose_last_run_never_stopped_reregisters_once(make_node, go_hub: LocalHub, tmp_path, caplog) -> None:
    # A process killed while its path was dead leaves its connection open at the hub until the read
    # deadline; the next process knows it only from its ledger, left open (see test_ledger).
    caplog.set_level(logging.INFO, logger="octohub_sync")
    opts = dict(_hub=go_hub, state_dir=str(tmp_path), pc_id="node_restarted", hub_read_timeout=READ_TIMEOUT,
                ping_interval=0.3, ping_timeout=0.2)
    clean = make_node(**opts)
    assert clean.wait_connected(10)
    assert clean.stop(timeout=5)
    (tmp_path / "node_restarted.open").touch()  # what a kill -9 leaves (a real one: test_ledger)
    client = make_node(**opts)
    assert client.wait_connected(10)
    patience = READ_TIMEOUT + reregister_margin(READ_TIMEOUT) + 3.0
    assert go_hub.wait_for(lambda: client.stats()["reregistrations"] == 1 and go_hub.connected(client.pc_id), patience)
    assert any("ended without stopping" in r.getMessage() for r in caplog.records)
    assert clean.stats()["reregistrations"] == 0  # a first start, with no open ledger behind it
