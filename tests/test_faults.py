"""Real faults injected into a real local hub: the node must recover by itself."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import pytest

from octohub_sync import GaveUpError, NodeWebSocketClient
from octohub_sync.hub import LocalHub

from .conftest import KEY, node_threads, wait_until
from .proxy import StallProxy


def ready_count(hub: LocalHub, pc_id: str) -> int:
    return sum(1 for m in hub.received if m.get("type") == "node_ready" and m.get("pc_id") == pc_id)


class Gate:
    """Handlers that say when they started and wait until the test releases them."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def handler(self, result: Any) -> Callable[[dict], Any]:
        def handle(task: dict) -> Any:
            self.started.set()
            self.release.wait(10)
            return result(task) if callable(result) else result
        return handle


def connected_node(make_node, handlers: dict, **opts: Any) -> NodeWebSocketClient:
    """A node with ``handlers`` registered, started and connected."""
    client = make_node(_start=False, **opts)
    for task_type, handler in handlers.items():
        client.register_task_handler(task_type, handler)
    client.start()
    assert client.wait_connected(10)
    return client


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
    assert hub.close(node.pc_id, code=1000) == 1
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


def test_result_of_task_running_during_drop_arrives_after_reconnect(make_node, hub: LocalHub) -> None:
    for redeliver in (True, False):
        with LocalHub(KEY, redeliver=redeliver) as h:
            gate = Gate()
            client = connected_node(make_node, {"slow": gate.handler("done")}, _hub=h, pc_id=f"node_drop{int(redeliver)}")
            tid = h.send_task("slow")
            assert gate.started.wait(10)
            h.drop(client.pc_id)
            assert wait_until(lambda: not client.is_connected(), 10)
            gate.release.set()  # finishes while disconnected: the result waits in the outbox
            assert h.wait_for(lambda: tid in h.results, 10)
            # With redelivery the hub may re-send the task after the outbox flush; the node then
            # answers with the stored result, so duplicates are identical and the task ran once.
            results = h.results[tid]
            assert {r["result"] for r in results} == {"done"} and all(r == results[0] for r in results)
            assert len(results) == 1 or redeliver
            assert client.stats()["tasks_completed"] == 1
            client.stop(5)


def test_redelivered_task_runs_once(make_node, hub: LocalHub) -> None:
    client = make_node(_start=False)
    calls, release = [], threading.Event()
    client.register_task_handler("count", lambda task: (calls.append(1), release.wait(10), len(calls))[2])
    client.start()
    assert client.wait_connected(10)
    hub.send_task("count", task_id="t-1")
    hub.send_task("count", task_id="t-1")  # while running: ignored
    assert wait_until(lambda: client.stats()["tasks_duplicate"] == 1, 10)
    release.set()
    assert hub.wait_result("t-1")["result"] == 1
    hub.send_task("count", task_id="t-1")  # after it finished: stored result again
    assert hub.wait_for(lambda: len(hub.results["t-1"]) == 2, 10)
    assert hub.results["t-1"][0] == hub.results["t-1"][1]
    assert len(calls) == 1


def test_backpressure_refuses_beyond_workers_plus_pending(make_node, hub: LocalHub) -> None:
    gate = Gate()
    client = connected_node(make_node, {"block": gate.handler(True)}, max_workers=2, max_pending=1)
    ids = [hub.send_task("block") for _ in range(5)]
    assert hub.wait_for(lambda: all(t in hub.results for t in ids[3:]), 10)
    for t in ids[3:]:
        assert hub.results[t][0]["status"] == "failed" and "node busy" in hub.results[t][0]["error"]
    assert not any(t in hub.results for t in ids[:3])
    gate.release.set()
    assert all(hub.wait_result(t)["status"] == "completed" for t in ids[:3])
    assert client.stats()["tasks_rejected"] == 2


def test_task_timeout_from_message_and_default(make_node, hub: LocalHub) -> None:
    gate = Gate()
    client = connected_node(make_node, {"block": gate.handler("late")}, task_timeout=0.3)
    own = hub.send_task("block", timeout=0.2)
    default = hub.send_task("block")
    assert hub.wait_result(own)["error"] == "TaskTimeout: timed out after 0.2 s"
    assert hub.wait_result(default)["error"] == "TaskTimeout: timed out after 0.3 s"
    gate.release.set()
    assert wait_until(lambda: client.stats()["tasks_running"] == 0, 10)
    assert len(hub.results[own]) == 1 and len(hub.results[default]) == 1  # late results discarded
    assert client.stats()["tasks_timed_out"] == 2


def test_graceful_stop_drains_and_refuses(make_node, hub: LocalHub) -> None:
    gate = Gate()
    client = connected_node(make_node, {"slow": gate.handler("finished")})
    running = hub.send_task("slow")
    assert gate.started.wait(10)
    stopper = threading.Thread(target=client.stop, kwargs={"timeout": 10})
    stopper.start()
    assert wait_until(lambda: client.stats()["state"] == "stopping", 5)
    late = hub.send_task("echo")
    assert hub.wait_result(late)["error"] == "NodeShuttingDown: node shutting down"
    gate.release.set()
    stopper.join(10)
    assert hub.wait_result(running)["result"] == "finished"
    assert hub.wait_for(lambda: hub.connections[-1]["closed"] is not None, 5)
    assert hub.connections[-1].get("close_code") == 1000
    assert not node_threads()


def test_duplicate_pc_id_settles_and_warns(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    with LocalHub(KEY, notify_replaced=False) as h:
        opts = dict(_hub=h, pc_id="node_twin", reconnect_interval=0.2, reconnect_max_interval=0.6, stable_after=2.0)
        make_node(**opts)
        make_node(**opts)
        window = 6.0
        start = time.monotonic()
        assert h.wait_for(lambda: time.monotonic() - start >= window, window + 1) or True
        opened = [c for c in h.connections if c["pc_id"] == "node_twin"]
    # A storm would be hundreds of connections; backoff caps each node near one per 0.3-0.6 s
    # plus one quick retry after each connection that lived longer than stable_after.
    assert len(opened) <= 2 * (window / 0.3 + 2), len(opened)
    assert any("same pc_id" in r.getMessage() or "pc_id node_twin is probably" in r.getMessage()
               for r in caplog.records)


def test_full_outbox_gives_up_oldest_and_counts(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    with LocalHub(KEY, redeliver=False) as h:
        gate = Gate()
        client = connected_node(make_node, {"slow": gate.handler(lambda task: task["task_id"])},
                                _hub=h, outbox_size=2, pc_id="node_outbox")
        ids = [h.send_task("slow") for _ in range(4)]
        assert wait_until(lambda: client.stats()["tasks_running"] == 4, 10)
        h.stop_ws()  # no way back while the results are produced
        assert wait_until(lambda: not client.is_connected(), 10)
        gate.release.set()
        assert wait_until(lambda: client.stats()["tasks_completed"] == 4, 10)
        assert client.stats()["results_dropped"] == 2 and client.stats()["outbox"] == 2
        assert any("outbox full" in r.getMessage() for r in caplog.records)
        h.start_ws()
        assert h.wait_for(lambda: len(h.results) == 2, 10)
        assert set(h.results) < set(ids)
