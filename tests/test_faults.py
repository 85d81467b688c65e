"""Network faults injected into a real local hub: drops, restarts, stalls, API and handshake
failures, a duplicate pc_id. The node must recover by itself."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from octohub_sync import GaveUpError, NodeWebSocketClient
from octohub_sync._transport.connection import CLOSE_TIMEOUT
from octohub_sync.hub import LocalHub

from .conftest import KEY, node_threads, wait_until
from .proxy import StallProxy


def ready_count(hub: LocalHub, pc_id: str) -> int:
    return sum(1 for m in hub.received if m.get("type") == "node_ready" and m.get("pc_id") == pc_id)


def test_reconnects_after_drop(node: NodeWebSocketClient, hub: LocalHub) -> None:
    for n in range(2, 5):
        assert hub.drop(node.pc_id) == 1
        assert hub.wait_for(lambda: ready_count(hub, node.pc_id) == n, 10)
        assert hub.wait_result(hub.send_task("echo", {"n": n}))["status"] == "completed"
    assert node.stats()["reconnects"] == 3


def test_reconnects_after_ws_server_restart(node: NodeWebSocketClient, hub: LocalHub) -> None:
    hub.stop_ws()
    assert wait_until(lambda: not node.is_connected(), 10)
    failures = node.stats()["connect_failures"]
    assert wait_until(lambda: node.stats()["connect_failures"] >= failures + 2, 10)  # retrying, refused
    hub.start_ws()
    assert node.wait_connected(10)
    assert hub.wait_result(hub.send_task("echo"))["status"] == "completed"


def test_clean_close_by_hub_also_reconnects(node: NodeWebSocketClient, hub: LocalHub) -> None:
    # websocket-client's own reconnect= would stop here: a clean close ends its loop.
    assert hub.close_connections(node.pc_id, code=1000) == 1
    assert hub.wait_for(lambda: ready_count(hub, node.pc_id) == 2, 10)


def test_half_open_path_detected_by_missing_pong(make_node, hub: LocalHub, caplog) -> None:
    proxy = StallProxy(hub.ws_port)
    try:
        client = make_node(connect_mode="direct", ws_port=proxy.port, ping_interval=0.5, ping_timeout=0.3)
        assert client.wait_connected(10)
        caplog.set_level(logging.INFO, logger="octohub_sync")
        proxy.stall()  # TCP stays up, nothing passes: only a missing pong can tell
        assert hub.wait_for(lambda: ready_count(hub, client.pc_id) == 2, 10)
        assert client.wait_connected(10)
        assert hub.wait_result(hub.send_task("echo"))["status"] == "completed"
        assert any("lost" in r.getMessage() for r in caplog.records)
    finally:
        proxy.close()


@pytest.mark.parametrize("fault", ["401", "500", "html", "garbage", "timeout"])
def test_api_faults_retry_then_connect(make_node, hub: LocalHub, fault: str, caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    hub.api_fault = fault
    client = make_node(connect_timeout=0.5)
    assert wait_until(lambda: client.stats()["connect_failures"] >= 2, 10), client.stats()
    assert not client.is_connected()
    hub.api_fault = None
    assert client.wait_connected(10)
    text = "\n".join(r.getMessage() for r in caplog.records)
    if fault == "401":
        assert "OCTOHUB_SIGNATURE_KEY" in text and "clock" in text


def test_websocket_handshake_401_retries(make_node, hub: LocalHub) -> None:
    hub.ws_fault = "401"
    client = make_node()
    assert wait_until(lambda: client.stats()["connect_failures"] >= 2, 10)
    hub.ws_fault = None
    assert client.wait_connected(10)


def test_gives_up_after_max_attempts(make_node, hub: LocalHub) -> None:
    hub.api_fault = "401"
    client = make_node(max_reconnect_attempts=3, _start=False)
    started = time.monotonic()
    with pytest.raises(GaveUpError, match="3 consecutive failed"):
        client.run_forever()
    assert time.monotonic() - started < 20
    assert client.stats()["connect_failures"] == 3
    assert not node_threads()


def test_backoff_spaces_attempts_during_outage(make_node, hub: LocalHub) -> None:
    hub.api_fault = "500"
    client = make_node(reconnect_interval=0.2, reconnect_max_interval=0.8)
    assert wait_until(lambda: len(hub.api_requests) >= 6, 15)
    times = [r["time"] for r in hub.api_requests[:6]]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # Retry 1 waits up to 1 s; retry n>=2 at least half of min(0.8, 0.2 * 2**(n-2)).
    for n, gap in enumerate(gaps[1:], start=2):
        assert gap >= 0.5 * min(0.8, 0.2 * 2 ** (n - 2)) * 0.9, gaps
    hub.api_fault = None
    assert client.wait_connected(10)


def test_duplicate_pc_id_settles_and_warns(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    with LocalHub(KEY, notify_replaced=False) as h:
        opts = dict(_hub=h, pc_id="node_twin", reconnect_interval=0.2, reconnect_max_interval=0.6, stable_after=2.0)
        window = 6.0
        # A storm would be hundreds of connections; backoff caps each node near one per 0.3-0.6 s
        # plus one quick retry after each connection that lived longer than stable_after.
        cap = 2 * (window / 0.3 + 2)

        def opened() -> list[dict]:
            return [c for c in h.connections if c["pc_id"] == "node_twin"]

        make_node(**opts)
        make_node(**opts)
        # Watch the whole window (every new connection wakes the hub's condition): a storm fails at once.
        assert not h.wait_for(lambda: len(opened()) > cap, window), len(opened())
        # The two nodes did fight over the pc_id (each connection replaced the other's), or the
        # cap above proves nothing.
        assert len(opened()) >= 4, opened()
    assert any("same pc_id" in r.getMessage() or "pc_id node_twin is probably" in r.getMessage()
               for r in caplog.records)




def test_stop_on_a_stalled_path_aborts_after_the_close_timeout(make_node, hub: LocalHub) -> None:
    proxy = StallProxy(hub.ws_port)
    try:
        # Pings too rare to notice the stall: only stop() meets it.
        client = make_node(connect_mode="direct", ws_port=proxy.port, ping_interval=30, ping_timeout=10)
        assert client.wait_connected(10)
        proxy.stall()  # the close frame goes out; no answer comes back
        started = time.monotonic()
        assert client.stop(timeout=5)  # nothing was running and nothing is unsent
        # The close timeout bounds it, not the 40 s after which a missing pong would end the session.
        assert CLOSE_TIMEOUT <= time.monotonic() - started < 10
        assert not node_threads()
    finally:
        proxy.close()


def test_a_send_into_a_stalled_path_gives_up_after_the_connect_timeout(make_node, caplog) -> None:
    """A result whose send makes no progress ends the connection after OCTOHUB_CONNECT_TIMEOUT,
    long before the keep-alive would notice; the result is sent again on the next connection."""
    caplog.set_level(logging.INFO, logger="octohub_sync")
    with LocalHub(KEY, max_size=64 * 2**20) as hub:
        proxy = StallProxy(hub.ws_port)
        try:
            gate = threading.Event()
            client = make_node(_hub=hub, _start=False, connect_mode="direct", ws_port=proxy.port,
                               ping_interval=30, ping_timeout=20, connect_timeout=1.0, max_result_bytes=0)
            # More than the socket buffers on both sides of a stalled path can take.
            client.register_task_handler("big", lambda task: (gate.wait(10), "x" * (24 * 2**20))[1])
            client.start()
            assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
            task_id = hub.send_task("big")
            assert wait_until(lambda: client.stats()["tasks_running"] == 1, 10)
            proxy.stall()
            released = time.monotonic()
            gate.set()
            assert wait_until(lambda: client.stats()["reconnects"] >= 1, 20), client.stats()
            assert time.monotonic() - released < 10  # the keep-alive alone: ping_interval + ping_timeout = 50 s
            assert any("send failed" in r.getMessage() for r in caplog.records)
            assert hub.wait_result(task_id, 20)["status"] == "completed"
        finally:
            proxy.close()
