"""examples/middleware.py served by a node: timing lines with the task id, failures tagged with the type."""
from __future__ import annotations

import logging

import pytest

from octohub_sync.hub import LocalHub

from examples import middleware as example

pytestmark = pytest.mark.timeout(60)


def test_the_example_times_tasks_and_tags_failures(make_node, hub: LocalHub, caplog: pytest.LogCaptureFixture) -> None:
    client = make_node(_start=False)
    example.handlers(client)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    with caplog.at_level(logging.INFO, logger=example.__name__):
        tid = hub.send_task("add", {"a": 2, "b": 3})
        assert hub.wait_result(tid, timeout=20)["result"] == 5
        failed = hub.wait_result(hub.send_task("add", {"a": 2}), timeout=20)
    assert failed["error"] == "TaggedError: add: KeyError: 'b'", failed
    timed = [r for r in caplog.records if r.name == example.__name__ and r.getMessage().startswith("add took ")]
    assert len(timed) == 2 and timed[0].task_id == tid
