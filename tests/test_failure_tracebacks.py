"""A failing handler's traceback: logged once, at WARNING, with the task id, below the ``failed`` line
(docs/observability.md), from a thread or an isolated child; carried by the plugin's ``TaskFailed``."""
from __future__ import annotations

import logging
from typing import Any

import pytest

from octohub_sync import NodeWebSocketClient
from octohub_sync._ops.log_safety import SafeLogFilter
from octohub_sync.hub import LocalHub
from octohub_sync.testing import TaskFailed, make_local_node

from . import isolated_handlers

pytestmark = pytest.mark.timeout(60)

LOGIN = "alice@example.com"
SIGNED = "wss://hub/ws?pc_id=n&timestamp=1&signature=" + "ab" * 32


def _page(data: dict) -> Any:
    return data["missing"]  # the line a user needs to see


def _account(data: dict) -> Any:
    return _page(data)


def raises_three_deep(task: dict) -> Any:
    return _account(task["data"])


def raises_with_a_secret(task: dict) -> Any:
    raise ConnectionError(f"login {LOGIN} failed at {SIGNED}")


def _failed_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "failed:" in r.getMessage()]


def _shown(record: logging.LogRecord) -> str:
    """The record as a program's handler prints it: our filter ran on the logger, the formatter here."""
    SafeLogFilter().filter(record)
    return logging.Formatter("%(levelname)s %(message)s").format(record)


def _run(make_node: Any, hub: LocalHub, task_type: str, handler: Any, *, isolated: bool = False, **node: Any) -> dict:
    client: NodeWebSocketClient = make_node(_start=False, **node)
    client.register_task_handler(task_type, handler, **({"isolation": "process"} if isolated else {}))
    client.start()
    assert client.wait_connected(10)
    result = hub.wait_result(hub.send_task(task_type, {"a": 1}, pc_id=client.pc_id), timeout=30)
    assert result["status"] == "failed"
    return result


def test_the_traceback_is_logged_once_at_warning_with_the_task_id(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    result = _run(make_node, hub, "raises", raises_three_deep)
    [record] = _failed_lines(caplog)
    assert record.levelno == logging.WARNING and result["task_id"] in record.getMessage()
    shown = _shown(record)
    assert "Traceback (most recent call last):" in shown and shown.endswith("KeyError: 'missing'")
    for function in ("raises_three_deep", "_account", "_page"):
        assert f"{__file__}\", line" in shown and f"in {function}\n" in shown
    assert 'return data["missing"]  # the line a user needs to see' in shown
    assert "octohub_sync/" not in shown.split("Traceback", 1)[1]  # the user's frames only, not the node's
    assert sum("Traceback" in _shown(r) for r in caplog.records) == 1


def test_log_task_errors_type_keeps_the_frames_and_hides_the_messages(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    _run(make_node, hub, "login", raises_with_a_secret, log_task_errors="type")
    [record] = _failed_lines(caplog)
    shown = _shown(record)
    assert "in raises_with_a_secret" in shown and shown.endswith("ConnectionError")
    assert "alice" not in shown and "signature=" + "ab" * 32 not in shown


def test_a_signature_in_the_message_is_masked_in_the_traceback_too(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    _run(make_node, hub, "login", raises_with_a_secret)
    shown = _shown(_failed_lines(caplog)[0])
    assert "ConnectionError: login alice@example.com failed at" in shown and "ab" * 32 not in shown


def test_an_isolated_handlers_traceback_comes_back_from_its_child(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    _run(make_node, hub, "fail", isolated_handlers.fail, isolated=True)
    [record] = _failed_lines(caplog)
    shown = _shown(record)
    assert record.levelno == logging.WARNING
    assert f"{isolated_handlers.__file__}\", line" in shown and "in fail\n" in shown
    assert 'raise KeyError(task["data"]["missing"])' in shown and shown.endswith("KeyError: 'missing'")


def test_the_plugins_task_failed_carries_the_traceback(hub: LocalHub) -> None:
    node = make_local_node(hub)
    try:
        node.register("raises", raises_three_deep)
        with pytest.raises(TaskFailed) as info:
            node.run("raises", {"a": 1})
    finally:
        node.stop()
    assert "in _page" in info.value.traceback and info.value.traceback.endswith("KeyError: 'missing'")
    assert "# the line a user needs to see" in str(info.value)


def test_the_process_pools_lines_carry_the_pc_id(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    _run(make_node, hub, "exit3", isolated_handlers.exit3, isolated=True, pc_id="node_pool_lines")
    crashed = [r.getMessage() for r in caplog.records if "child" in r.getMessage() and "exit" in r.getMessage()]
    assert crashed and all(m.startswith("[node_pool_lines] task ") for m in crashed), crashed


def test_a_chain_of_causes_is_shown_oldest_first_with_control_characters_escaped() -> None:
    from octohub_sync._ops.log_safety import format_traceback

    def parse(text: str) -> int:
        return int(text)

    try:
        try:
            parse("x\n2026-01-01 - forged line")
        except ValueError as exc:
            raise LookupError("price missing") from exc
    except LookupError as exc:
        shown = format_traceback(exc)
    first, second = shown.split("The above exception was the direct cause of the following exception:")
    assert "in parse" in first and first.rstrip().endswith("\\n2026-01-01 - forged line'")
    assert "\n2026-01-01" not in shown  # the hub's newline cannot start a line of its own
    assert second.strip().endswith("LookupError: price missing")
