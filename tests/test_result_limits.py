"""Every frame the node writes fits the hub's message limit; handler errors reach the log cut short, or not at all.

The hub here is a real local hub with the Go server's limit (1 MiB, ``max_message_size``): a larger frame
from the node makes it close the connection (1009), as the Go server resets it.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from octohub_sync import ConfigError, load_settings
from octohub_sync._wire import protocol
from octohub_sync.hub import LocalHub
from octohub_sync._delivery.ledger import Ledger
from octohub_sync._ops.stats import Stats

from .conftest import KEY, wait_until

pytestmark = pytest.mark.timeout(60)

#: The Go server's max_message_size.
GO_LIMIT = 2**20
#: What issue 28 measured with: a sleep_time of 1.5 MB, which the sleep handler quotes in its error.
HUGE = "x" * 1_500_000


def test_an_oversized_failure_is_cut_and_never_blocks_the_connection(make_node) -> None:
    with LocalHub(KEY, max_size=GO_LIMIT, redeliver=False) as hub:
        node = make_node(_hub=hub)
        assert node.wait_connected(10)
        slept = hub.send_task("sleep", {"sleep_time": HUGE})
        unknown = hub.send_task("t" * 1_200_000)  # refused UnknownTaskType, which quotes the task type
        for tid, starts in ((slept, "ValueError: sleep_time must be a number, got 'xxx"),
                            (unknown, "UnknownTaskType: no handler for task_type 'ttt")):
            result = hub.wait_result(tid, 15)
            assert result["status"] == "failed" and result["error"].startswith(starts)
            assert result["error"].endswith(" more characters]") and "... [cut: 1," in result["error"]
            sizes = [m["_bytes"] for m in hub.received if m.get("task_id") == tid]
            assert sizes and max(sizes) <= protocol.MAX_FAILED_BYTES
        # Still the first connection, nothing resent: no frame of the node went over the limit.
        assert len(hub.connections) == 1 and node.stats()["results_resent"] == 0
        assert hub.wait_result(hub.send_task("echo", {"n": 1}))["status"] == "completed"


def test_a_failed_result_fits_any_result_limit() -> None:
    # Characters that grow on the wire: 2 bytes in UTF-8, 6 as a JSON escape (control characters).
    for error in ("é\x01" * 100_000, "😀" * 100_000, "\ud800" * 100_000, "short"):
        for limit in (0, 2000, 20_000):
            frame = protocol.task_failed("t-1", error, max_bytes=limit)
            size = protocol.frame_size(frame)
            assert size <= (limit or protocol.MAX_FAILED_BYTES), (error[:5], limit)
            body = json.loads(frame)
            if error == "short":
                assert body["error"] == "short"
            else:  # cut, not emptied: as much as fits, then the marker
                assert body["error"].startswith(error[:10]) and size > min(limit or 10**9, protocol.MAX_FAILED_BYTES) - 50
                kept = len(body["error"]) - len(body["error"].rsplit("... [cut: ", 1)[1]) - len("... [cut: ")
                assert body["error"].endswith(f"[cut: {len(error) - kept:,} more characters]")


def test_a_ping_with_a_huge_request_id_is_answered_within_the_limit(make_node) -> None:
    with LocalHub(KEY, max_size=GO_LIMIT, dialect="go") as hub:
        node = make_node(_hub=hub)
        assert node.wait_connected(10) and hub.wait_connected(node.pc_id)
        hub.send_message({"action": "ping", "request_id": "r" * 1_500_000})
        hub.send_message({"action": "ping", "request_id": "r-2"})
        assert hub.wait_for(lambda: hub.count("pong") >= 2, 10)
        pongs = [m for m in hub.received if m.get("action") == "pong"]
        assert "request_id" not in pongs[0] and pongs[1]["request_id"] == "r-2"
        assert len(hub.connections) == 1


def _stored(state: Path, pc_id: str, frames: dict[str, str]) -> None:
    """A ledger holding ``frames`` unsent, as a version without today's limits left it."""
    ledger = Ledger(str(state), pc_id, cache_size=10, stats=Stats(),
                    log=logging.LoggerAdapter(logging.getLogger("t"), {}))
    ledger.open()
    for tid, frame in frames.items():
        ledger.add_result(tid, frame, lambda results: None, finished=True)
    ledger.settle()
    ledger.close()


def test_an_oversized_result_left_in_a_ledger_is_cut_at_restore(make_node, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    state = tmp_path / "state"
    # Written the way the older version wrote them: the failure whole, a completed result over the limit.
    old_failure = json.dumps({"type": "task_result", "task_id": "old-fail", "status": "failed",
                              "error": f"ValueError: sleep_time must be a number, got {HUGE!r}", "timestamp": 1})
    old_big = protocol.task_completed("old-big", "y" * 1_200_000)
    _stored(state, "node_old", {"old-fail": old_failure, "old-big": old_big, "old-ok": protocol.task_completed("old-ok", 1)})
    with LocalHub(KEY, max_size=GO_LIMIT, redeliver=False) as hub:
        node = make_node(_hub=hub, pc_id="node_old", state_dir=str(state))
        assert node.wait_connected(10)
        failed, big, ok = (hub.wait_result(tid, 15) for tid in ("old-fail", "old-big", "old-ok"))
        assert failed["error"].startswith("ValueError: sleep_time") and failed["error"].endswith(" more characters]")
        assert failed["timestamp"] == 1  # the result as it was, only shorter
        assert big["status"] == "failed" and big["error"].startswith("ResultTooLarge: 1200")
        assert ok["result"] == 1
        assert len(hub.connections) == 1 and node.stats()["results_resent"] == 0
        # A redelivery of the failed task is answered from the ledger: cut too.
        hub.send_task("sleep", task_id="old-fail")
        assert hub.wait_for(lambda: len(hub.results["old-fail"]) == 2, 10)
        assert hub.results["old-fail"][1] == failed and len(hub.connections) == 1
    warned = [r.getMessage() for r in caplog.records if "exceeds today's limits" in r.getMessage()]
    assert any("old-fail" in m for m in warned) and any("old-big" in m for m in warned)


def _failing(message: str):
    def handler(task):
        raise ValueError(message)
    return handler


def test_handler_errors_are_logged_cut_short(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    node = make_node(_start=False)
    node.register_task_handler("page", _failing("<html>" + "z" * 1_500_000 + "</html>"))
    node.start()
    assert node.wait_connected(10)
    tid = hub.send_task("page")
    result = hub.wait_result(tid, 15)
    assert result["error"].startswith("ValueError: <html>zzz") and result["error"].endswith(" more characters]")
    lines = [r.getMessage() for r in caplog.records if tid in r.getMessage()]
    assert any("failed: ValueError: <html>zzz" in line for line in lines)
    assert max(len(r.getMessage()) for r in caplog.records) < 2000


def test_log_task_errors_type_keeps_the_text_out_of_every_log(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    node = make_node(_start=False, log_task_errors="type")
    node.register_task_handler("login", _failing("login failed for alice@corp with password hunter2"))
    node.start()
    assert node.wait_connected(10)
    tid = hub.send_task("login")
    # The hub still gets the error: only the log is kept clean.
    assert "hunter2" in hub.wait_result(tid, 15)["error"]
    assert wait_until(lambda: any(tid in r.getMessage() and "ValueError" in r.getMessage() for r in caplog.records), 5)
    assert not [r for r in caplog.records if "hunter2" in r.getMessage() or "alice@corp" in r.getMessage()]


def test_log_task_errors_takes_text_or_type_only() -> None:
    assert load_settings(environ={}).log_task_errors == "text"
    assert load_settings(environ={"OCTOHUB_LOG_TASK_ERRORS": "TYPE"}).log_task_errors == "type"
    with pytest.raises(ConfigError, match="^OCTOHUB_LOG_TASK_ERRORS='full': expected one of text, type"):
        load_settings(environ={"OCTOHUB_LOG_TASK_ERRORS": "full"})
