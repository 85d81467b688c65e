"""Results reach the hub or are never silent: delivery confirmation, size limits, loud repeated failures."""
from __future__ import annotations

import json
import logging
import threading

import pytest

from octohub_sync import ConfigError, load_settings
from octohub_sync.connection_log import REPEAT_WARNING_INTERVAL, ConnectionLog
from octohub_sync.hub import LocalHub

from .conftest import KEY, wait_until
from .proxy import StallProxy


def test_results_are_confirmed_by_the_hub(make_node, hub: LocalHub) -> None:
    client = make_node()
    assert client.wait_connected(10)
    ids = [hub.send_task("echo", {"n": n}) for n in range(50)]
    assert all(hub.wait_result(t)["status"] == "completed" for t in ids)
    # Every result was confirmed by a pong, none was sent twice.
    assert wait_until(lambda: client.stats()["results_unconfirmed"] == 0, 5), client.stats()
    assert client.stats()["results_resent"] == 0
    assert all(len(hub.results[t]) == 1 for t in ids)


def test_result_written_into_a_dead_path_is_sent_again(make_node, caplog) -> None:
    # No redelivery: the hub never asks again, so only the node's own re-send can bring the result.
    caplog.set_level(logging.INFO, logger="octohub_sync")
    with LocalHub(KEY, redeliver=False) as hub:
        proxy = StallProxy(hub.ws_port)
        try:
            started, release = threading.Event(), threading.Event()
            client = make_node(_hub=hub, _start=False, connect_mode="direct", ws_port=proxy.port,
                               ping_interval=0.5, ping_timeout=0.3)
            client.register_task_handler("slow", lambda task: (started.set(), release.wait(10), "done")[2])
            client.start()
            assert client.wait_connected(10)
            tid = hub.send_task("slow")
            assert started.wait(10)
            proxy.stall()  # TCP stays up, nothing passes: the result is written, the hub never reads it
            release.set()
            assert wait_until(lambda: client.stats()["tasks_completed"] == 1, 10)
            result = hub.wait_result(tid, 15)  # after the missing pong, the reconnect and node_ready
            assert result["result"] == "done"
            assert client.stats()["results_resent"] == 1
            assert len(hub.results[tid]) == 1
            assert any("not confirmed by the hub" in r.getMessage() for r in caplog.records)
        finally:
            proxy.close()


def test_result_over_the_limit_is_answered_failed(make_node, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    # A hub enforcing the real config's 1 MiB limit: without the node's own limit the result is lost.
    with LocalHub(KEY, dialect="go", max_size=2**20) as hub:
        client = make_node(_hub=hub, _start=False)
        client.register_task_handler("big", lambda task: "x" * 1_500_000)
        client.start()
        assert client.wait_connected(10)
        result = hub.wait_result(hub.send_task("big"))
        assert result["status"] == "failed"
        assert result["error"].startswith("ResultTooLarge: 1500") and "limit 1048576" in result["error"]
        assert client.stats()["tasks_failed"] == 1
        assert hub.wait_result(hub.send_task("echo"))["status"] == "completed"  # same session goes on
        assert len(hub.connections) == 1
    assert any("ResultTooLarge" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_result_limit_zero_means_none(make_node, hub: LocalHub) -> None:
    client = make_node(_start=False, max_result_bytes=0)
    client.register_task_handler("big", lambda task: "x" * 1_500_000)
    client.start()
    assert client.wait_connected(10)
    assert hub.wait_result(hub.send_task("big"))["result"] == "x" * 1_500_000


@pytest.mark.parametrize("dialect", ["seed", "go"])
def test_task_over_the_message_limit_is_answered_failed(make_node, dialect: str) -> None:
    with LocalHub(KEY, dialect=dialect) as hub:
        client = make_node(_hub=hub, max_message_bytes=1024)
        assert client.wait_connected(10)
        tid = hub.send_task("echo", {"pad": "x" * 5000})
        result = hub.wait_result(tid)
        assert result["status"] == "failed" and result["error"].startswith("TaskTooLarge: frame of ")
        assert "OCTOHUB_MAX_MESSAGE_BYTES=1024" in result["error"]
        assert client.stats()["tasks_rejected"] == 1 and client.stats()["bad_frames"] == 0
        # An oversized frame whose task_id is ambiguous (another one inside data) stays unanswered.
        hub.send_raw(json.dumps({"type": "task", "task_id": "a", "task_type": "echo",
                                 "data": {"task_id": "b", "pad": "x" * 5000}}), pc_id=client.pc_id)
        assert wait_until(lambda: client.stats()["bad_frames"] == 1, 5)
        assert hub.wait_result(hub.send_task("echo"))["status"] == "completed"
        assert "a" not in hub.results and "b" not in hub.results


def test_wrong_key_is_a_warning_once_then_quiet(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    hub.api_fault = "401"
    client = make_node()
    assert wait_until(lambda: client.stats()["connect_failures"] >= 4, 15)
    failures = [r for r in caplog.records if "connection" in r.getMessage() and "failed (" in r.getMessage()]
    warnings = [r for r in failures if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and len(failures) >= 4
    assert "HTTP 401" in warnings[0].getMessage() and "OCTOHUB_SIGNATURE_KEY" in warnings[0].getMessage()


def test_repeated_failures_warn_again_after_the_interval() -> None:
    from octohub_sync.stats import Stats

    level = ConnectionLog(pc_id="node_x", stats=Stats(), log=logging.LoggerAdapter(logging.getLogger("t"), {})).failure_level
    assert level("AuthError/401", now=0.0) == (logging.WARNING, 0)
    assert level("AuthError/401", now=1.0) == (logging.INFO, 0)
    assert level("ConnectionRefusedError", now=2.0) == (logging.WARNING, 0)  # another kind is news
    assert level("AuthError/401", now=3.0) == (logging.INFO, 0)
    # After the interval it warns again and says how many it kept quiet about.
    assert level("AuthError/401", now=REPEAT_WARNING_INTERVAL) == (logging.WARNING, 2)


def test_direct_mode_signs_with_the_websocket_servers_key(make_node) -> None:
    # The hub's WebSocket server has its own key; the node's API key is another one.
    with LocalHub("ws-server-key-123") as hub:
        client = make_node(_hub=hub, connect_mode="direct", signature_key="api-server-key-456",
                           ws_signature_key="ws-server-key-123")
        assert client.wait_connected(10)
        wrong = make_node(_hub=hub, connect_mode="direct", signature_key="api-server-key-456", pc_id="node_wrong")
        assert wait_until(lambda: wrong.stats()["connect_failures"] >= 1, 10)
        assert "OCTOHUB_WS_SIGNATURE_KEY" in (wrong.stats()["last_error"] or "")


def test_direct_mode_without_any_key_names_the_websocket_key() -> None:
    from octohub_sync import NodeWebSocketClient

    settings = load_settings({"connect_mode": "direct"}, env_file=False, environ={})
    with pytest.raises(ConfigError, match="OCTOHUB_WS_SIGNATURE_KEY"):
        NodeWebSocketClient(settings=settings)
