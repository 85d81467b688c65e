"""Retries on the node (retries=, retry_on=, retry_backoff=, retry_backoff_max=): _execution/retry.py, runner.py."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest

from octohub_sync import Handlers, NodeWebSocketClient, TaskCancelled
from octohub_sync.hub import LocalHub
from octohub_sync._execution.options import TaskOptions
from octohub_sync._execution.retry import RetryPolicy

from . import middleware_handlers as mw
from .conftest import wait_until

pytestmark = pytest.mark.timeout(60)


# -- the policy, no node -------------------------------------------------------------------------

def test_delay_doubles_with_at_most_a_quarter_of_jitter_and_is_capped() -> None:
    policy = RetryPolicy(5, backoff=2.0, backoff_max=10.0)
    assert policy.delay(1, rand=lambda: 0.5) == 2.0
    assert policy.delay(2, rand=lambda: 0.5) == 4.0
    assert policy.delay(1, rand=lambda: 0.0) == 1.5 and policy.delay(1, rand=lambda: 1.0) == 2.5  # +-25 %
    assert policy.delay(3, rand=lambda: 1.0) == 10.0  # 8 * 1.25 capped at retry_backoff_max
    assert policy.delay(400, rand=lambda: 0.5) == 10.0  # no overflow


def test_only_retry_on_is_retried_and_never_a_cancel() -> None:
    policy = RetryPolicy(2, retry_on=(ConnectionError,))
    assert policy.retries_on(ConnectionResetError("x"), 1) and policy.retries_on(ConnectionError("x"), 2)
    assert not policy.retries_on(ConnectionError("x"), 3)  # 2 retries: 3 attempts in all
    assert not policy.retries_on(KeyError("x"), 1)
    assert not RetryPolicy(2).retries_on(TaskCancelled("timed out after 1 s"), 1)
    assert not RetryPolicy(2).retries_on(SystemExit(1), 1)


@pytest.mark.parametrize("options, error", [
    ({"retry_on": KeyError}, "retry_on= needs retries=N"),
    ({"retries": -1}, "retries=-1 must be a whole number >= 0"),
    ({"retries": "3"}, "retries='3' must be a whole number"),
    ({"retries": 2, "retry_on": int}, "retry_on=<class 'int'> must be an exception class"),
    ({"retries": 2, "retry_backoff": -1}, "retry_backoff=-1 must be a number of seconds >= 0"),
    ({"retries": 2, "retry_backoff_max": "60"}, "retry_backoff_max='60' must be a number"),
])
def test_bad_retry_keywords_fail_at_registration_naming_the_type(options: dict, error: str) -> None:
    with pytest.raises((TypeError, ValueError), match="task type 'post': " + error.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        TaskOptions.build("post", **options)
    with pytest.raises((TypeError, ValueError), match="task type 'post'"):
        Handlers().task("post", **options)(mw.flaky)


def test_retries_default_to_exception_and_are_off_by_default() -> None:
    assert TaskOptions.build("post").retry is None
    assert TaskOptions.build("post", retries=2).retry == RetryPolicy(2, (Exception,), 1.0, 60.0)


# -- against the local hub --------------------------------------------------------------------------

def retry_node(make_node: Callable[..., NodeWebSocketClient], hub: LocalHub, *, isolation: Any = None,
               threaded: dict = {}, **keywords: Any) -> NodeWebSocketClient:
    client = make_node(_start=False, **keywords.pop("_node", {}))
    client.register_task_handler("flaky", mw.flaky, isolation=isolation, **keywords)
    for task_type, handler in threaded.items():
        client.register_task_handler(task_type, handler)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    return client


def attempts_in(log: Path) -> list[float]:
    return [float(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("isolation", [None, "process"])
def test_a_blip_is_retried_with_backoff_and_answered_once(make_node, hub: LocalHub, tmp_path: Path,
                                                          isolation: Any) -> None:
    retry_node(make_node, hub, isolation=isolation, retries=3, retry_on=(ConnectionError,), retry_backoff=0.2)
    log = tmp_path / "attempts"
    result = hub.wait_result(hub.send_task("flaky", {"log": str(log), "succeed_on": 3}), timeout=30)
    assert result["status"] == "completed" and result["attempts"] == 3, result
    times = attempts_in(log)
    assert len(times) == 3
    assert times[1] - times[0] >= 0.2 * 0.75 and times[2] - times[1] >= 0.4 * 0.75  # 0.2, then 0.4 s (+-25 %)


@pytest.mark.parametrize("isolation", [None, "process"])
def test_the_last_error_says_how_many_attempts(make_node, hub: LocalHub, tmp_path: Path, isolation: Any) -> None:
    retry_node(make_node, hub, isolation=isolation, retries=2, retry_on=ConnectionError, retry_backoff=0.05)
    log = tmp_path / "attempts"
    result = hub.wait_result(hub.send_task("flaky", {"log": str(log)}), timeout=30)
    assert result["status"] == "failed" and result["attempts"] == 3, result
    assert result["error"] == "ConnectionError: blip 3 (after 3 attempts)"
    other = tmp_path / "other"
    once = hub.wait_result(hub.send_task("flaky", {"log": str(other), "raise": "KeyError"}), timeout=30)
    assert once["error"] == "KeyError: 'blip 1'" and once["attempts"] == 1, once  # not in retry_on
    assert len(attempts_in(other)) == 1


def test_a_waiting_retry_holds_no_worker_and_no_limit_slot(make_node, hub: LocalHub, tmp_path: Path) -> None:
    client = retry_node(make_node, hub, retries=1, retry_backoff=6, retry_backoff_max=6, key="account",
                        concurrency=1, threaded={"ping": lambda task: "pong"}, _node={"max_workers": 1})
    first, second = tmp_path / "first", tmp_path / "second"
    waiting = hub.send_task("flaky", {"log": str(first), "account": "a", "succeed_on": 2})
    assert wait_until(lambda: len(attempts_in(first)) == 1, 10)
    assert wait_until(lambda: client.runner.tasks.counts() == (0, 1), 5)  # waiting, not running
    # The only worker and the key's only slot are free while it waits 6 s (4.5 at least): both run meanwhile.
    began = time.monotonic()
    assert hub.wait_result(hub.send_task("ping"), timeout=10)["result"] == "pong"
    other = hub.wait_result(hub.send_task("flaky", {"log": str(second), "account": "a", "succeed_on": 1}),
                            timeout=10)
    assert other["status"] == "completed" and time.monotonic() - began < 4.0
    assert len(attempts_in(first)) == 1  # still waiting
    result = hub.wait_result(waiting, timeout=20)
    assert result["status"] == "completed" and result["attempts"] == 2


def test_a_cancel_during_the_wait_answers_at_once(make_node, hub: LocalHub, tmp_path: Path) -> None:
    retry_node(make_node, hub, retries=3, retry_backoff=30, retry_backoff_max=30)
    log = tmp_path / "attempts"
    tid = hub.send_task("flaky", {"log": str(log)})
    assert wait_until(lambda: len(attempts_in(log)) == 1, 10)
    time_cancelled = time.monotonic()
    hub.cancel(tid)
    result = hub.wait_result(tid, timeout=5)
    assert time.monotonic() - time_cancelled < 3
    assert result["status"] == "failed" and result["error"].startswith("TaskCancelled: cancelled by the hub"), result
    assert "before attempt 2" in result["error"] and result["attempts"] == 1
    assert len(attempts_in(log)) == 1


def test_the_time_limit_covers_every_attempt(make_node, hub: LocalHub, tmp_path: Path) -> None:
    retry_node(make_node, hub, retries=50, retry_backoff=0.3, retry_backoff_max=0.3)
    log = tmp_path / "attempts"
    began = time.monotonic()
    result = hub.wait_result(hub.send_task("flaky", {"log": str(log)}, timeout=1.5), timeout=20)
    assert result["status"] == "failed" and result["error"].startswith("TaskTimeout"), result
    assert time.monotonic() - began < 5
    count = len(attempts_in(log))
    assert 2 <= count <= 6
    assert not wait_until(lambda: len(attempts_in(log)) > count, 1.0)


def test_progress_frames_say_which_attempt_runs(make_node, hub: LocalHub, tmp_path: Path) -> None:
    retry_node(make_node, hub, retries=1, retry_backoff=0.05, _node={"progress_interval": 0})
    log = tmp_path / "attempts"
    tid = hub.send_task("flaky", {"log": str(log), "succeed_on": 2})
    frame = hub.wait_progress(tid, lambda f: f.get("attempt") == 2, timeout=20)
    assert frame["message"] == "attempt 2"
    assert hub.wait_result(tid, timeout=20)["attempts"] == 2


def ledger_ids(db_file: Path, table: str) -> list[str]:
    """Task ids in a ledger table, read the way another process would (tests/test_ledger.py)."""
    import sqlite3
    from contextlib import closing

    if not db_file.exists():
        return []
    with closing(sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=5)) as db:
        return [row[0] for row in db.execute(f"SELECT task_id FROM {table}")]


def test_the_ledger_keeps_a_waiting_retry_as_a_started_task(make_node, hub: LocalHub, tmp_path: Path) -> None:
    state = tmp_path / "state"
    retry_node(make_node, hub, retries=2, retry_backoff=30, retry_backoff_max=30,
               _node={"pc_id": "node_retry", "state_dir": str(state)})
    log = tmp_path / "attempts"
    tid = hub.send_task("flaky", {"log": str(log)})
    assert wait_until(lambda: len(attempts_in(log)) == 1, 10)
    db = state / "node_retry.sqlite3"
    # Between two attempts it is a started task without a result, as a running one: after a crash the
    # hub's redelivery decides (run again, or TaskInterrupted with retry_interrupted=False).
    assert wait_until(lambda: tid in ledger_ids(db, "started"), 10)
    assert tid not in ledger_ids(db, "finished")
    hub.cancel(tid)
    assert hub.wait_result(tid, timeout=10)["status"] == "failed"
    assert wait_until(lambda: tid in ledger_ids(db, "finished") and tid not in ledger_ids(db, "started"), 10)


def test_a_stop_answers_a_waiting_retry_node_shutting_down(make_node, hub: LocalHub, tmp_path: Path) -> None:
    client = retry_node(make_node, hub, retries=2, retry_backoff=30, retry_backoff_max=30,
                        _node={"shutdown_timeout": 1})
    log = tmp_path / "attempts"
    tid = hub.send_task("flaky", {"log": str(log)})
    assert wait_until(lambda: len(attempts_in(log)) == 1, 10)
    began = time.monotonic()
    assert client.stop(timeout=10)  # clean: nothing left running
    assert time.monotonic() - began < 5  # the 30 s backoff is not waited out
    result = hub.wait_result(tid, timeout=10)
    assert result["status"] == "failed", result
    assert result["error"] == "NodeShuttingDown: node stopped before attempt 2" and result["attempts"] == 1
    assert len(attempts_in(log)) == 1


def test_retries_and_middleware_against_the_go_dialect(make_node, tmp_path: Path) -> None:
    """The Go server's hazards on (its crash on a ping frame, its queue that drops): a task retried through
    a middleware is answered once, with its attempts, and nothing the node sends crashes the hub."""
    from .conftest import KEY
    with LocalHub(KEY, dialect="go") as go_hub:
        client = make_node(_hub=go_hub, _start=False)
        client.add_middleware(mw.tag_outer)
        client.register_task_handler("flaky", mw.flaky, retries=3, retry_on=ConnectionError, retry_backoff=0.05)
        client.start()
        assert client.wait_connected(10) and go_hub.wait_connected(client.pc_id, 10)
        log = tmp_path / "attempts"
        task_id = go_hub.send_task("flaky", {"log": str(log), "succeed_on": 3})
        result = go_hub.wait_result(task_id, timeout=30)
        assert result["status"] == "completed" and result["attempts"] == 3, result
        assert result["result"]["order"] == ["outer"]  # the middleware wrapped the attempts
        assert len(attempts_in(log)) == 3 and len(go_hub.results[task_id]) == 1
        assert wait_until(lambda: client.delivery.unconfirmed() == 0, 10)  # confirmed by the Go dialect's JSON pings
        assert go_hub.crashes == [] and go_hub.frames("ping") == 0
