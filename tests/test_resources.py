"""Resources on worker threads (issue 31): made lazily where used, reused, torn down on their own thread."""
from __future__ import annotations

import itertools
import sys
import threading
import time
from typing import Any, Callable

import psutil
import pytest
import requests

from octohub_sync import Handlers, NodeWebSocketClient, ResourceBroken
from octohub_sync.hub import LocalHub

from .conftest import free_port, wait_until

pytestmark = pytest.mark.timeout(60)


class Trace:
    """A resource factory that records which thread made and tore down each instance."""

    def __init__(self, fail_first: int = 0) -> None:
        self.lock = threading.Lock()
        self.made: list[tuple[int, int]] = []  # (instance, thread)
        self.torn: list[tuple[int, int]] = []
        self.numbers = itertools.count(1)
        self.fail_first = fail_first

    def factory(self) -> Any:
        with self.lock:
            if self.fail_first:
                self.fail_first -= 1
                raise RuntimeError("no display")
            number = next(self.numbers)
            self.made.append((number, threading.get_ident()))
        yield {"number": number, "thread": threading.get_ident()}
        with self.lock:
            self.torn.append((number, threading.get_ident()))


def watchers() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children():
        try:
            if "octohub_sync._platform.node_guard" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def use(task: dict, browser: dict) -> dict:
    if (task.get("data") or {}).get("broken"):
        raise ResourceBroken("the browser crashed")
    return {"number": browser["number"], "made_on": browser["thread"], "run_on": threading.get_ident()}


def resource_node(make_node: Callable[..., NodeWebSocketClient], hub: LocalHub, trace: Trace,
                  handler: Callable[..., Any] = use, **limits: Any) -> NodeWebSocketClient:
    opts = {key: limits.pop(key) for key in ("max_uses", "max_age") if key in limits}
    client = make_node(_start=False, **limits)
    client.register_resource("browser", trace.factory, **opts)
    client.register_task_handler("visit", handler, uses=["browser"])
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    return client


def run(hub: LocalHub, data: Any = None) -> dict:
    return hub.wait_result(hub.send_task("visit", data), timeout=10)


def test_a_resource_is_made_lazily_on_the_worker_reused_there_and_torn_down_there_at_stop(make_node, hub) -> None:
    trace = Trace()
    client = resource_node(make_node, hub, trace, max_workers=1)
    assert trace.made == []  # lazily: no task used it yet
    results = [run(hub)["result"] for _ in range(3)]
    assert [r["number"] for r in results] == [1, 1, 1]  # one made, reused by the later tasks
    assert all(r["made_on"] == r["run_on"] for r in results)
    assert client.stats()["resources"] == {"browser": {"live": 1, "made": 1, "torn_down": 0}}
    if sys.platform.startswith("linux"):  # the node's tree guard: a watcher process while it runs
        assert watchers()
    assert client.stop(timeout=5)
    assert trace.torn == trace.made  # torn down at the stop, on the thread that made it
    assert wait_until(lambda: not watchers(), 5)  # a stop says goodbye: the watcher leaves, killing nothing
    assert client.stats()["resources"]["browser"] == {"live": 0, "made": 1, "torn_down": 1}


def test_each_worker_thread_has_its_own_and_the_stop_tears_each_down_on_its_thread(make_node, hub) -> None:
    trace = Trace()
    gate = threading.Barrier(3, timeout=10)

    def together(task: dict, browser: dict) -> dict:
        gate.wait()  # three tasks at once: three worker threads, three resources
        return use(task, browser)

    client = resource_node(make_node, hub, trace, handler=together, max_workers=3)
    tids = [hub.send_task("visit") for _ in range(3)]
    results = [hub.wait_result(tid, timeout=10)["result"] for tid in tids]
    assert len({r["number"] for r in results}) == 3 and all(r["made_on"] == r["run_on"] for r in results)
    assert client.stop(timeout=5)
    assert sorted(trace.torn) == sorted(trace.made) and len({t for _, t in trace.torn}) == 3


def test_max_uses_tears_it_down_after_that_many_tasks(make_node, hub) -> None:
    trace = Trace()
    client = resource_node(make_node, hub, trace, max_workers=1, max_uses=2)
    assert [run(hub)["result"]["number"] for _ in range(5)] == [1, 1, 2, 2, 3]
    assert [n for n, _ in trace.torn] == [1, 2]
    assert client.stats()["resources"]["browser"] == {"live": 1, "made": 3, "torn_down": 2}


def test_max_age_makes_a_new_one_once_it_is_that_old(make_node, hub) -> None:
    trace = Trace()
    resource_node(make_node, hub, trace, max_workers=1, max_age=0.2)
    assert run(hub)["result"]["number"] == 1
    born = time.monotonic()
    assert wait_until(lambda: time.monotonic() - born > 0.25, 2)  # the resource ages; nothing else to wait for
    assert run(hub)["result"]["number"] == 2
    assert [n for n, _ in trace.torn] == [1]


def test_resource_broken_fails_the_task_and_the_next_task_gets_a_new_one(make_node, hub) -> None:
    trace = Trace()
    client = resource_node(make_node, hub, trace, max_workers=1)
    assert run(hub)["result"]["number"] == 1
    broken = run(hub, {"broken": True})
    assert broken["status"] == "failed" and broken["error"] == "ResourceBroken: the browser crashed"
    assert [n for n, _ in trace.torn] == [1]
    assert run(hub)["result"]["number"] == 2
    assert client.stats()["resources"]["browser"] == {"live": 1, "made": 2, "torn_down": 1}


def test_a_setup_that_raises_fails_that_task_and_the_next_one_tries_again(make_node, hub) -> None:
    trace = Trace(fail_first=1)
    client = resource_node(make_node, hub, trace, max_workers=1)
    failed = run(hub)
    assert failed["status"] == "failed" and failed["error"] == "ResourceError: browser: RuntimeError: no display"
    assert run(hub)["result"]["number"] == 1  # the node serves on, and the next task's setup succeeds
    assert client.stats()["resources"]["browser"] == {"live": 1, "made": 1, "torn_down": 0}


def test_tasks_and_metrics_pages_count_resources_by_name(make_node, hub) -> None:
    trace = Trace()
    port = free_port()
    resource_node(make_node, hub, trace, max_workers=1, metrics_port=port)
    run(hub)
    tasks = requests.get(f"http://127.0.0.1:{port}/tasks", timeout=5).json()
    assert tasks["resources"] == {"browser": {"live": 1, "made": 1, "torn_down": 0}}
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'octohub_node_resources_live{pc_id="node_test0",resource="browser"} 1' in metrics
    assert 'octohub_node_resources_made_total{pc_id="node_test0",resource="browser"} 1' in metrics
    assert 'octohub_node_resources_torn_down_total{pc_id="node_test0",resource="browser"} 0' in metrics


def test_handlers_declare_resources_like_pytest_fixtures(make_node, hub) -> None:
    handlers = Handlers()
    seen: list[str] = []

    @handlers.resource("session", max_uses=10)
    def session() -> Any:
        seen.append("setup")
        yield "a session"
        seen.append("teardown")

    @handlers.task("login", uses=["session"])
    def login(task: dict, session: str) -> str:
        return session

    client = make_node(_start=False)
    handlers(client)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    assert hub.wait_result(hub.send_task("login"))["result"] == "a session"
    client.stop(timeout=5)
    assert seen == ["setup", "teardown"]


def test_bad_declarations_name_what_is_wrong(make_node) -> None:
    client = make_node(_start=False)
    with pytest.raises(ValueError, match="'visit' uses 'browser', but no resource is registered"):
        client.register_task_handler("visit", use, uses=["browser"])
    with pytest.raises(TypeError, match="uses='browser' must be a list of resource names"):
        client.register_task_handler("visit", use, uses="browser")
    with pytest.raises(ValueError, match="resource 'browser': max_uses must be a positive number"):
        client.register_resource("browser", Trace().factory, max_uses=0)
    with pytest.raises(ValueError, match="must be a Python identifier"):
        client.register_resource("my browser", Trace().factory)
    with pytest.raises(TypeError, match="is not callable"):
        client.register_resource("browser", "chrome")


def test_a_teardown_that_raises_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    from octohub_sync._execution.resources import Held, ResourceSpec, Tally

    order: list[str] = []

    def good() -> Any:
        yield "good"
        order.append("good torn")

    def bad() -> Any:
        yield "bad"
        raise OSError("driver already gone")

    tally = Tally()
    held = Held(tally)
    specs = [ResourceSpec.build("good", good), ResourceSpec.build("bad", bad), ResourceSpec.build("plain", dict)]
    assert held.acquire(specs) == {"good": "good", "bad": "bad", "plain": {}}  # a plain factory needs no yield
    held.close()  # the last made first
    assert order == ["good torn"]
    assert "tearing down resource bad failed" in caplog.text and "driver already gone" in caplog.text
    assert tally.view() == {name: {"live": 0, "made": 1, "torn_down": 1} for name in ("bad", "good", "plain")}
