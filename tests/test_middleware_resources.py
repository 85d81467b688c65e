"""Issue 32 with issue 31: middleware wraps the handler call with its resources; a ResourceBroken is retried
only when retry_on says so, and the next attempt gets fresh resources."""
from __future__ import annotations

import itertools
import threading
from typing import Any, Callable

import pytest

from octohub_sync import NodeWebSocketClient, ResourceBroken
from octohub_sync.hub import LocalHub

pytestmark = pytest.mark.timeout(60)

_inside = threading.local()


class Browsers:
    """A resource factory that says whether each browser was made inside the middleware."""

    def __init__(self) -> None:
        self.numbers = itertools.count(1)
        self.made: list[tuple[int, bool]] = []  # (number, made inside the middleware)
        self.torn: list[int] = []

    def factory(self) -> Any:
        number = next(self.numbers)
        self.made.append((number, getattr(_inside, "yes", False)))
        yield {"number": number}
        self.torn.append(number)


def marks(task: dict, call_next: Callable[[], Any]) -> Any:
    _inside.yes = True
    try:
        return call_next()
    finally:
        _inside.yes = False


def breaks_the_first(task: dict, browser: dict) -> dict:
    if browser["number"] == 1:
        raise ResourceBroken("the browser crashed")
    return {"number": browser["number"]}


def node(make_node: Callable[..., NodeWebSocketClient], hub: LocalHub, browsers: Browsers,
         **keywords: Any) -> NodeWebSocketClient:
    client = make_node(_start=False, max_workers=1)
    client.add_middleware(marks)
    client.register_resource("browser", browsers.factory)
    client.register_task_handler("visit", breaks_the_first, uses=["browser"], **keywords)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    return client


def test_middleware_wraps_the_handler_with_its_resources_and_broken_is_retried_fresh(make_node,
                                                                                    hub: LocalHub) -> None:
    browsers = Browsers()
    node(make_node, hub, browsers, retries=2, retry_on=ResourceBroken, retry_backoff=0.05)
    result = hub.wait_result(hub.send_task("visit", {}), timeout=30)
    assert result["status"] == "completed" and result["attempts"] == 2, result
    assert result["result"] == {"number": 2}  # the second attempt got a new browser
    assert browsers.torn[:1] == [1]  # the broken one was torn down
    assert browsers.made == [(1, True), (2, True)]  # each made inside the middleware


def test_resource_broken_is_not_retried_unless_retry_on_says_so(make_node, hub: LocalHub) -> None:
    browsers = Browsers()
    node(make_node, hub, browsers, retries=2, retry_on=ConnectionError, retry_backoff=0.05)
    result = hub.wait_result(hub.send_task("visit", {}), timeout=30)
    assert result["status"] == "failed" and result["attempts"] == 1, result
    assert result["error"] == "ResourceBroken: the browser crashed"
    assert [number for number, _ in browsers.made] == [1]
