"""The built-in task types called directly (the end-to-end tests run them through a hub)."""
from __future__ import annotations

import re
import time

import pytest

from octohub_sync._execution.builtin_tasks import BUILTIN_HANDLERS, default, echo, sleep


def test_builtins_are_echo_sleep_and_default() -> None:
    assert BUILTIN_HANDLERS == {"echo": echo, "sleep": sleep, "default": default}


def test_echo_and_default() -> None:
    before = int(time.time())
    result = echo({"task_id": "t", "data": {"a": 1}})
    assert result["echo"] == {"a": 1} and before <= result["processed_at"] <= time.time()
    assert echo({"task_id": "t"})["echo"] == {}
    assert default({"task_id": "t9"}) == "task t9 finished with the default handler"


@pytest.mark.parametrize("raw", ["soon", None, [1], {"s": 1}])
def test_sleep_time_that_is_not_a_number_fails_naming_it(raw: object) -> None:
    with pytest.raises(ValueError, match="sleep_time must be a number, got " + re.escape(repr(raw))):
        sleep({"task_id": "t", "data": {"sleep_time": raw}})


def test_int_keys_come_back_as_strings_as_the_docs_and_the_docstring_say(hub) -> None:
    from pathlib import Path

    from octohub_sync import NodeWebSocketClient
    from octohub_sync.testing import make_local_node

    node = make_local_node(hub)
    try:
        node.register("numbers", lambda task: {1: "a", "t": (1, 2)})
        assert node.run("numbers") == {"1": "a", "t": [1, 2]}
    finally:
        node.stop()
    docs = Path(__file__).resolve().parent.parent / "docs"
    for page in ("messages.md", "guarantees.md"):
        assert '`{1: "a"}`' in (docs / page).read_text() and "int keys" in (docs / page).read_text(), page
    assert 'int keys arrive as strings' in NodeWebSocketClient.register_task_handler.__doc__
