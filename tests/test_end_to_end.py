"""The node against the real local hub: every message of docs/protocol.md §3, every built-in, and
the facade's lifecycle (registration, start, stop, run_forever)."""
from __future__ import annotations

import json
import logging
import threading

import pytest

from octohub_sync import NodeWebSocketClient
from octohub_sync.hub import LocalHub

from .conftest import node_threads, wait_until


def test_connect_sends_node_ready(node: NodeWebSocketClient, hub: LocalHub) -> None:
    ready = [m for m in hub.received if m.get("type") == "node_ready"]
    assert ready and ready[0]["pc_id"] == node.get_pc_id()
    assert isinstance(ready[0]["timestamp"], int)
    assert {"echo", "sleep", "default"} <= set(ready[0]["task_types"])
    assert node.is_connected()


def test_echo(node: NodeWebSocketClient, hub: LocalHub) -> None:
    tid = hub.send_task("echo", {"a": [1, 2], "text": "你好"})
    result = hub.wait_result(tid)
    assert result["status"] == "completed"
    assert result["result"]["echo"] == {"a": [1, 2], "text": "你好"}
    assert isinstance(result["result"]["processed_at"], int)


def test_sleep_clamps_and_reports(node: NodeWebSocketClient, hub: LocalHub) -> None:
    tid = hub.send_task("sleep", {"sleep_time": 0.01})
    assert hub.wait_result(tid)["result"] == "slept 0.1 seconds"


def test_default_handler(node: NodeWebSocketClient, hub: LocalHub) -> None:
    tid = hub.send_task("default", {})
    result = hub.wait_result(tid)
    assert result["status"] == "completed" and "default handler" in result["result"]


def test_custom_handler_gets_whole_task(make_node, hub: LocalHub) -> None:
    client = make_node(_start=False)
    seen = []

    @client.register_task_handler("file_operation")
    def handle(task):
        seen.append(task)
        return f"file {task['data']['file_path']} done"

    assert handle({"data": {"file_path": "x"}}) == "file x done"  # the decorator returned it unchanged
    client.start()
    assert client.wait_connected(10)
    tid = hub.send_task("file_operation", {"file_path": "/tmp/a"})
    assert hub.wait_result(tid)["result"] == "file /tmp/a done"
    assert seen[-1]["task_id"] == tid and seen[-1]["task_type"] == "file_operation"


def test_unknown_type_fails_naming_it(node: NodeWebSocketClient, hub: LocalHub) -> None:
    result = hub.wait_result(hub.send_task("no_such_type", {}))
    assert result["status"] == "failed" and "'no_such_type'" in result["error"]


def test_failing_handler_gives_failed_and_node_lives(make_node, hub: LocalHub) -> None:
    client = make_node(_start=False)
    client.register_task_handler("boom", lambda task: 1 / 0)
    client.register_task_handler("not_json", lambda task: {1, 2})
    client.register_task_handler("exits", lambda task: (_ for _ in ()).throw(SystemExit(3)))
    client.start()
    assert client.wait_connected(10)
    boom = hub.wait_result(hub.send_task("boom"))
    assert boom["status"] == "failed" and boom["error"] == "ZeroDivisionError: division by zero"
    bad = hub.wait_result(hub.send_task("not_json"))
    assert bad["status"] == "failed" and "not JSON" in bad["error"]
    exits = hub.wait_result(hub.send_task("exits"))
    assert exits["status"] == "failed" and exits["error"] == "SystemExit: 3"
    assert hub.wait_result(hub.send_task("echo", {"after": 1}))["status"] == "completed"
    assert client.is_connected()


def test_malformed_frame_then_good_task(node: NodeWebSocketClient, hub: LocalHub) -> None:
    hub.send_raw("{not json")
    hub.send_raw(b"\x00\x01binary")
    hub.send_raw(json.dumps({"type": "task", "task_type": "echo"}))  # no task_id: must not run
    tid = hub.send_task("echo", {"ok": True})
    assert hub.wait_result(tid)["status"] == "completed"
    assert node.stats()["bad_frames"] == 3
    assert node.stats()["tasks_completed"] == 1


def test_json_ping_answered(node: NodeWebSocketClient, hub: LocalHub) -> None:
    hub.send_json_ping()
    assert hub.wait_for(lambda: hub.count("pong") == 1, 5)
    pong = [m for m in hub.received if m.get("type") == "pong"][0]
    assert isinstance(pong["timestamp"], int)


def test_message_handler_and_unknown_kind(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="octohub_sync")
    client = make_node(_start=False)
    got = []
    client.register_message_handler("notification", got.append)
    client.start()
    assert client.wait_connected(10)
    hub.send_message({"type": "something_else", "x": 1})
    hub.send_message({"type": "notification", "notification": "hi"})
    assert wait_until(lambda: got, 5)
    assert got[0]["notification"] == "hi"
    # Frames are handled in order: the unknown kind came first. It reached no handler, was not
    # counted as a bad frame, got no answer, and was logged at DEBUG.
    assert got == [{"type": "notification", "notification": "hi"}]
    assert client.stats()["bad_frames"] == 0
    ignored = [r for r in caplog.records if "ignored message of kind 'something_else'" in r.getMessage()]
    assert [r.levelno for r in ignored] == [logging.DEBUG]
    assert [m for m in hub.received if m.get("type") != "node_ready"] == []
    assert client.is_connected()


def test_stop_leaves_no_thread(make_node, hub: LocalHub) -> None:
    client = make_node()
    assert client.wait_connected(10)
    assert hub.wait_result(hub.send_task("echo"))["status"] == "completed"
    assert client.stop(timeout=5)
    assert not node_threads()
    assert not client.is_connected()


def test_context_manager_and_seed_import_path(hub: LocalHub) -> None:
    from octohub_sync.client import NodeWebSocketClient as Seed

    with Seed("127.0.0.1", hub.api_port, hub.key, env_file=False, pc_id="node_ctx", status_interval=0) as client:
        assert client.wait_connected(10)
        assert client.get_pc_id() == "node_ctx"
    assert not node_threads()


def test_stop_of_an_idle_node_does_not_wait_for_the_ping_timeout(make_node, hub: LocalHub) -> None:
    import time

    client = make_node(ping_interval=30, ping_timeout=20, connect_timeout=20)
    assert client.wait_connected(10)
    started = time.monotonic()
    assert client.stop(timeout=20)
    # Once, a thread slept in select() until the ping timeout (20 s here) after a clean close.
    assert time.monotonic() - started < 5
    assert hub.wait_for(lambda: hub.connections[-1].get("close_code") == 1000, 5)


def test_handler_registration_refuses_what_cannot_be_called(make_node) -> None:
    client = make_node(_start=False)
    with pytest.raises(TypeError, match="task handler for 'x' is not callable"):
        client.register_task_handler("x", "not a function")
    with pytest.raises(TypeError, match="message handler for 'note' is not callable"):
        client.register_message_handler("note", 42)

    @client.register_message_handler("note")
    def note(message):
        return message

    assert note({"n": 1}) == {"n": 1}  # the decorator returned it unchanged
    assert client.receiver.message_handlers["note"] is note


def test_public_example_key_warns(caplog) -> None:
    from octohub_sync import load_settings
    from octohub_sync._config.settings import PUBLIC_EXAMPLE_KEY

    caplog.set_level(logging.WARNING, logger="octohub_sync")
    NodeWebSocketClient(settings=load_settings({"signature_key": PUBLIC_EXAMPLE_KEY, "pc_id": "node_pub"},
                                               env_file=False, environ={}))
    assert any("public example key" in r.getMessage() for r in caplog.records)


def test_run_forever_returns_when_another_thread_stops_the_node(make_node, hub: LocalHub) -> None:
    client = make_node(_start=False)
    connected = []

    def stop_once_connected() -> None:
        connected.append(client.wait_connected(10))
        assert client.start() is client  # already started: nothing new
        client.stop(5)

    stopper = threading.Thread(target=stop_once_connected, name="test-stopper")
    stopper.start()
    client.run_forever()  # returns, raises nothing: the node did not give up
    stopper.join(10)
    assert connected == [True] and client.stats()["state"] == "stopped"


def test_ctrl_c_in_run_forever_stops_the_node_and_propagates(make_node, hub: LocalHub) -> None:
    import _thread

    client = make_node(_start=False)

    def interrupt_once_connected() -> None:
        if client.wait_connected(10):
            _thread.interrupt_main()  # what Ctrl-C does to a script blocked in run_forever()
        else:
            client.stop(5)

    interrupter = threading.Thread(target=interrupt_once_connected, name="test-interrupter")
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        client.run_forever()
    interrupter.join(10)
    assert client.stats()["state"] == "stopped" and not client.is_connected()
    assert not node_threads()
