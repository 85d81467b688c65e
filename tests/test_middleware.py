"""Middleware around every handler call, on the worker thread and in isolated children (_execution/middleware.py)."""
from __future__ import annotations

import os
from typing import Any, Callable

import pytest

from octohub_sync import Handlers, NodeWebSocketClient
from octohub_sync.hub import LocalHub
from octohub_sync._execution.middleware import compose

from . import middleware_handlers as mw

pytestmark = pytest.mark.timeout(60)


def node_with(make_node: Callable[..., NodeWebSocketClient], hub: LocalHub, *, isolation: Any = None,
              middleware: tuple = (mw.tag_outer, mw.tag_inner), **opts: Any) -> NodeWebSocketClient:
    client = make_node(_start=False, **opts)
    for fn in middleware:
        client.add_middleware(fn)
    client.register_task_handler("work", mw.handler, isolation=isolation)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    return client


def test_compose_puts_the_first_outermost_and_is_the_handler_itself_without_any() -> None:
    calls: list[str] = []

    def named(name: str) -> Callable[..., Any]:
        def layer(task: Any, call_next: Callable[[], Any]) -> Any:
            calls.append(name)
            return call_next()
        return layer

    def handler(task: Any) -> str:
        calls.append("handler")
        return "done"

    assert compose([], handler) is handler  # nothing at all on the task path without middleware
    chain = compose([named("first"), named("second")], handler)
    assert chain({"data": {}}) == "done" and calls == ["first", "second", "handler"]


@pytest.mark.parametrize("isolation", [None, "process"])
def test_middleware_wraps_the_handler_where_it_runs(make_node, hub: LocalHub, isolation: Any) -> None:
    node_with(make_node, hub, isolation=isolation)
    tid = hub.send_task("work", {})
    result = hub.wait_result(tid, timeout=30)
    assert result["status"] == "completed", result
    body = result["result"]
    assert body["order"] == ["outer", "inner"]  # the first registered is the outermost
    assert body["mw"]["task_id"] == tid  # current_task() works inside it
    assert body["mw"]["thread"] == body["thread"] and body["mw"]["pid"] == body["pid"]  # the handler's thread
    if isolation:
        assert body["pid"] != os.getpid()  # ... in the child for an isolated type
    else:
        assert body["pid"] == os.getpid()


@pytest.mark.parametrize("isolation", [None, "process"])
def test_middleware_turns_an_exception_into_a_result_or_raises(make_node, hub: LocalHub, isolation: Any) -> None:
    node_with(make_node, hub, isolation=isolation)
    rescued = hub.wait_result(hub.send_task("work", {"fail": True}), timeout=30)
    assert rescued["status"] == "completed" and rescued["result"]["rescued"] == "'missing'", rescued
    refused = hub.wait_result(hub.send_task("work", {"mw_raises": True}), timeout=30)
    assert refused["status"] == "failed" and refused["error"] == "RuntimeError: the middleware refuses"


@pytest.mark.parametrize("isolation", [None, "process"])
def test_cancel_and_time_limit_reach_a_middleware(make_node, hub: LocalHub, isolation: Any) -> None:
    node_with(make_node, hub, isolation=isolation, middleware=(mw.waits_for_cancel,))
    tid = hub.send_task("work", {"wait_in_middleware": True})
    frame = hub.wait_progress(tid, timeout=30)  # its middleware waits now: cancel it there
    assert frame["message"] == "waiting in the middleware", frame
    hub.cancel(tid)
    result = hub.wait_result(tid, timeout=30)
    assert result["status"] == "failed" and result["error"].startswith("TaskCancelled"), result
    timed = hub.wait_result(hub.send_task("work", {"wait_in_middleware": True}, timeout=1), timeout=30)
    assert timed["status"] == "failed" and "TaskTimeout" in timed["error"], timed


def test_handlers_registry_adds_its_middleware_first(make_node, hub: LocalHub) -> None:
    handlers = Handlers()
    assert handlers.middleware(mw.tag_outer) is mw.tag_outer  # a decorator: the function unchanged
    handlers.middleware(mw.tag_inner)
    handlers.task("work")(mw.handler)
    client = make_node(_start=False)
    handlers(client)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    result = hub.wait_result(hub.send_task("work", {}), timeout=30)
    assert result["result"]["order"] == ["outer", "inner"], result


def test_bad_middleware_is_refused_with_a_clear_error(make_node) -> None:
    client = make_node(_start=False)
    with pytest.raises(TypeError, match="middleware 3 is not callable"):
        client.add_middleware(3)
    with pytest.raises(TypeError, match="is not callable"):
        Handlers().middleware(None)  # type: ignore[arg-type]
    client.register_task_handler("iso", mw.handler, isolation="process")
    with pytest.raises(ValueError, match="task type 'iso' with isolation='process': the middleware .*lambda"):
        client.add_middleware(lambda task, call_next: call_next())
    client.add_middleware(mw.tag_outer)  # the refused one left nothing behind
    with pytest.raises(ValueError, match="middleware"):
        client.register_task_handler("iso2", mw.handler, isolation="process")
        client.add_middleware(lambda task, call_next: call_next())
    client.start()
    with pytest.raises(RuntimeError, match="before the node starts"):
        client.add_middleware(mw.tag_inner)
