"""The task runner through a real hub: duplicates, backpressure, time limits, drain on stop."""
from __future__ import annotations

import threading

from octohub_sync.hub import LocalHub

from .conftest import Gate, connected_node, node_threads, wait_until


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


def test_eight_tasks_run_at_once(make_node, hub: LocalHub) -> None:
    import threading

    client = make_node(_start=False, max_workers=8)
    gate = threading.Barrier(8, timeout=10)
    client.register_task_handler("meet", lambda task: gate.wait() >= 0)
    client.start()
    assert client.wait_connected(10)
    ids = [hub.send_task("meet") for _ in range(8)]
    # The barrier only opens when all 8 handlers are inside it at the same time.
    assert all(hub.wait_result(t, 15)["status"] == "completed" for t in ids)
