"""Per-type limits against the local hub: concurrency=, key=, rate= (docs/limits.md), measured from
the handlers' own start and end times."""
from __future__ import annotations

import re
import sys
import threading
import time
from typing import Any, Callable

import psutil
import pytest
import requests

from octohub_sync import NodeWebSocketClient
from octohub_sync.app import Handlers
from octohub_sync._ops.status_server import MetricsServer
from octohub_sync.hub import LocalHub

from .conftest import run_doc_example, wait_until

#: A handler's work: long enough for two tasks that may overlap to overlap (it synchronises nothing).
WORK = 0.05


class Timeline:
    """Handlers that record (task_id, key, start, end) on time.monotonic(), optionally held by a gate."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[str, Any, float, float]] = []
        self.starts: list[float] = []
        self.gate = threading.Event()
        self.gate.set()
        self.running = 0
        self.started = threading.Event()

    def handler(self, *, key: Callable[[dict], Any] = lambda task: None, work: float = WORK) -> Callable[[dict], Any]:
        def handle(task: dict) -> Any:
            start = time.monotonic()
            with self.lock:
                self.starts.append(start)
            self.started.set()
            assert self.gate.wait(10)
            time.sleep(work)  # the task's work
            with self.lock:
                self.spans.append((task["task_id"], key(task), start, time.monotonic()))
            return task["task_id"]
        return handle


def max_overlap(spans: list[tuple[str, Any, float, float]]) -> int:
    """The most spans open at one instant."""
    events = sorted([(s, 1) for _, _, s, _ in spans] + [(e, -1) for _, _, _, e in spans], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def started_node(make_node: Callable[..., NodeWebSocketClient], hub: LocalHub,
                 register: Callable[[NodeWebSocketClient], None], **settings: Any) -> NodeWebSocketClient:
    client = make_node(_start=False, **settings)
    register(client)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    return client


def results(hub: LocalHub, ids: list[str], timeout: float = 10) -> list[dict]:
    return [hub.wait_result(tid, timeout=timeout) for tid in ids]


def test_concurrency_holds_one_type_back_without_blocking_the_others(make_node, hub: LocalHub) -> None:
    slow = Timeline()
    slow.gate.clear()
    node = started_node(make_node, hub, lambda c: (
        c.register_task_handler("slow", slow.handler(), concurrency=1),
        c.register_task_handler("fast", lambda task: "fast")), max_workers=4)
    slow_ids = [hub.send_task("slow", {}) for _ in range(10)]
    assert slow.started.wait(10)
    fast_ids = [hub.send_task("fast", {}) for _ in range(6)]
    # The four workers are not all held by "slow": "fast" completes while nine "slow" wait.
    assert [r["result"] for r in results(hub, fast_ids)] == ["fast"] * 6
    assert len(slow.starts) == 1
    stats = node.stats()
    assert stats["tasks_waiting"] == 9 and stats["waiting_by_type"] == {"slow": 9}
    assert node.waiting_tasks() == [{"task_type": "slow", "key": None, "tasks": slow_ids[1:]}]
    slow.gate.set()
    assert [r["result"] for r in results(hub, slow_ids)] == slow_ids  # all ran, in arrival order
    assert max_overlap(slow.spans) == 1
    assert [tid for tid, *_ in slow.spans] == slow_ids


def test_concurrency_two_lets_two_run_at_once_never_three(make_node, hub: LocalHub) -> None:
    browser = Timeline()
    started_node(make_node, hub, lambda c: c.register_task_handler("browser", browser.handler(), concurrency=2),
                 max_workers=6)
    ids = [hub.send_task("browser", {}) for _ in range(8)]
    results(hub, ids)
    assert max_overlap(browser.spans) == 2


def test_key_limits_each_account_while_accounts_run_in_parallel(make_node, hub: LocalHub) -> None:
    posts = Timeline()
    started_node(make_node, hub, lambda c: c.register_task_handler(
        "post", posts.handler(key=lambda task: task["data"]["account"]), key="account", concurrency=1), max_workers=4)
    ids = [hub.send_task("post", {"account": account}) for _ in range(4) for account in ("alice", "bob")]
    results(hub, ids)
    for account in ("alice", "bob"):
        assert max_overlap([s for s in posts.spans if s[1] == account]) == 1, account
    assert max_overlap(posts.spans) == 2  # the two accounts did run at the same time


def test_key_function_picks_the_lane(make_node, hub: LocalHub) -> None:
    posts = Timeline()
    started_node(make_node, hub, lambda c: c.register_task_handler(
        "post", posts.handler(key=lambda task: task["data"]["who"]["id"]),
        key=lambda task: task["data"]["who"]["id"], concurrency=1), max_workers=4)
    ids = [hub.send_task("post", {"who": {"id": n % 2}}) for n in range(6)]
    results(hub, ids)
    assert all(max_overlap([s for s in posts.spans if s[1] == k]) == 1 for k in (0, 1))
    assert max_overlap(posts.spans) == 2


def test_rate_allows_n_starts_in_any_window_of_its_period(make_node, hub: LocalHub) -> None:
    timeline = Timeline()
    started_node(make_node, hub, lambda c: c.register_task_handler("tick", timeline.handler(work=0), rate="5/s"),
                 max_workers=8)
    ids = [hub.send_task("tick", {}) for _ in range(12)]
    results(hub, ids)
    starts = sorted(timeline.starts)
    # Any 6 consecutive starts span at least the period. The node counts a start when it hands the
    # task to its handler, microseconds before the handler's first line: 10 ms covers that gap.
    gaps = [starts[i + 5] - starts[i] for i in range(len(starts) - 5)]
    assert min(gaps) >= 1.0 - 0.01, gaps
    assert starts[-1] - starts[0] >= 2.0 - 0.01  # 12 starts at 5/s: three windows
    assert sum(1 for s in starts if s - starts[0] < 0.5) == 5  # the first five did not wait


def test_rate_per_key_value(make_node, hub: LocalHub) -> None:
    timeline = Timeline()
    started_node(make_node, hub, lambda c: c.register_task_handler(
        "like", timeline.handler(key=lambda task: task["data"]["account"], work=0), key="account", rate="1/s"),
        max_workers=4)
    ids = [hub.send_task("like", {"account": a}) for _ in range(2) for a in ("a", "b", "c")]
    results(hub, ids)
    by_key: dict[str, list[float]] = {}
    for _, key, start, _ in timeline.spans:
        by_key.setdefault(key, []).append(start)
    for key, starts in by_key.items():
        assert starts[1] - starts[0] >= 1.0 - 0.01, (key, starts)
    firsts = sorted(starts[0] for starts in by_key.values())
    assert firsts[-1] - firsts[0] < 0.5  # three accounts' first tasks did not wait for each other


@pytest.mark.parametrize("data, error", [
    ({}, "TaskKeyError: task type 'post' needs data['account']"),
    ({"Account": "alice"}, "TaskKeyError: task type 'post' needs data['account']"),
    ({"account": ["not", "hashable"]}, "TaskKeyError: task type 'post': key value ['not', 'hashable'] is not hashable"),
])
def test_a_key_that_cannot_be_read_is_answered_failed(make_node, hub: LocalHub, data: Any, error: str) -> None:
    ran: list[str] = []
    started_node(make_node, hub, lambda c: c.register_task_handler(
        "post", lambda task: ran.append(task["task_id"]) or "ran", key="account", concurrency=1))
    answer = hub.wait_result(hub.send_task("post", data))
    assert (answer["status"], answer["error"]) == ("failed", error)
    good = hub.send_task("post", {"account": "alice"})
    assert hub.wait_result(good)["result"] == "ran"  # the node keeps serving
    assert ran == [good]


def test_a_key_function_that_raises_is_answered_failed(make_node, hub: LocalHub) -> None:
    started_node(make_node, hub, lambda c: c.register_task_handler(
        "post", lambda task: "ran", key=lambda task: task["data"]["profile"]["id"], rate="10/s"))
    result = hub.wait_result(hub.send_task("post", {"profile": None}))
    assert result["status"] == "failed"
    assert result["error"] == "TaskKeyError: task type 'post': its key function raised TypeError: " \
                              "'NoneType' object is not subscriptable"


@pytest.mark.parametrize("options, kind, text", [
    ({"rate": "fast"}, ValueError, "task type 'post': rate='fast' is not a rate"),
    ({"rate": "0/s"}, ValueError, "rate='0/s'"),
    ({"rate": "5/d"}, ValueError, "rate='5/d'"),
    ({"rate": 5}, ValueError, "rate=5"),
    ({"concurrency": 0}, ValueError, "task type 'post': concurrency=0 must be >= 1"),
    ({"concurrency": "2"}, TypeError, "concurrency='2'"),
    ({"key": 5}, TypeError, "task type 'post': key=5 is neither"),
    ({"key": "account"}, ValueError, "task type 'post': key= holds concurrency= or rate= per key value"),
    ({"concurency": 2}, TypeError, "no keyword 'concurency' (did you mean concurrency?)"),
    ({"max_task_per_child": 2}, TypeError, "no keyword 'max_task_per_child' (did you mean max_tasks_per_child?)"),
])
def test_bad_options_are_refused_at_registration(make_node, options: dict, kind: type, text: str) -> None:
    node = make_node(_start=False)
    with pytest.raises(kind, match=re.escape(text)):
        node.register_task_handler("post", lambda task: None, **options)
    assert "post" not in node.runner.handlers
    registry = Handlers()
    with pytest.raises(kind, match=re.escape(text)):
        registry.task("post", **options)(lambda task: None)
    assert "post" not in registry.tasks


@pytest.mark.parametrize("options", [{"rate": "fast"}, {"concurrency": 0}, {"key": "account"}, {"concurency": 1}])
def test_a_bad_option_names_the_users_file_and_line(make_node, options: dict) -> None:
    node = make_node(_start=False)
    line = sys._getframe().f_lineno + 2  # the call's line
    with pytest.raises((TypeError, ValueError)) as info:
        node.register_task_handler("post", lambda task: None, **options)
    assert str(info.value).endswith(f"({__file__}, line {line})")
    registry = Handlers()
    line = sys._getframe().f_lineno + 2
    with pytest.raises((TypeError, ValueError)) as info:
        registry.task("post", **options)(lambda task: None)
    assert str(info.value).endswith(f"({__file__}, line {line})")


def test_handlers_registry_passes_the_keywords_on(make_node, hub: LocalHub) -> None:
    registry, timeline = Handlers(), Timeline()
    registry.task("browser", concurrency=1)(timeline.handler())
    assert registry.options == {"browser": {"concurrency": 1}}
    started_node(make_node, hub, registry, max_workers=4)
    results(hub, [hub.send_task("browser", {}) for _ in range(4)])
    assert max_overlap(timeline.spans) == 1


def test_waiting_tasks_count_against_max_pending(make_node, hub: LocalHub) -> None:
    slow = Timeline()
    slow.gate.clear()
    node = started_node(make_node, hub, lambda c: c.register_task_handler("slow", slow.handler(), concurrency=1),
                        max_workers=2, max_pending=3)
    ids = [hub.send_task("slow", {}) for _ in range(5)]  # 1 runs, 4 wait: capacity 2 + 3
    assert wait_until(lambda: node.stats()["tasks_waiting"] == 4, 10), node.stats()
    refused = hub.wait_result(hub.send_task("slow", {}))
    assert refused["status"] == "failed" and refused["error"].startswith("NodeBusy")
    slow.gate.set()
    assert [r["status"] for r in results(hub, ids)] == ["completed"] * 5


def test_cancel_of_a_waiting_task_answers_it_without_running(make_node, hub: LocalHub) -> None:
    slow = Timeline()
    slow.gate.clear()
    node = started_node(make_node, hub, lambda c: c.register_task_handler("slow", slow.handler(), concurrency=1))
    ids = [hub.send_task("slow", {}) for _ in range(3)]
    assert wait_until(lambda: node.stats()["tasks_waiting"] == 2, 10)
    hub.cancel(ids[1], "not needed")
    answer = hub.wait_result(ids[1])
    assert answer["status"] == "failed" and answer["error"].startswith("TaskCancelled: cancelled by the hub: not needed")
    slow.gate.set()
    assert [r["status"] for r in results(hub, [ids[0], ids[2]])] == ["completed", "completed"]
    assert [tid for tid, *_ in slow.spans] == [ids[0], ids[2]]


def test_time_limit_counts_while_a_task_waits(make_node, hub: LocalHub) -> None:
    slow = Timeline()
    slow.gate.clear()
    node = started_node(make_node, hub, lambda c: c.register_task_handler("slow", slow.handler(), concurrency=1))
    first = hub.send_task("slow", {})
    assert slow.started.wait(10)
    late = hub.send_task("slow", {}, timeout=0.3)
    answer = hub.wait_result(late)
    assert answer["status"] == "failed" and answer["error"].startswith("TaskTimeout")
    # Its place is given back at once (it no longer waits, nor counts against OCTOHUB_MAX_PENDING).
    assert wait_until(lambda: node.stats()["tasks_waiting"] == 0 and node.stats()["tasks_queued"] == 0, 5)
    slow.gate.set()
    after = hub.send_task("slow", {})
    results(hub, [first, after])
    assert [tid for tid, *_ in slow.spans] == [first, after]  # the timed-out one never ran


def test_stop_runs_waiting_tasks_within_the_drain_and_refuses_the_rest(make_node, hub: LocalHub) -> None:
    slow = Timeline()
    node = started_node(make_node, hub, lambda c: c.register_task_handler(
        "slow", slow.handler(work=0.4), concurrency=1), max_workers=4)
    ids = [hub.send_task("slow", {}) for _ in range(4)]
    assert wait_until(lambda: node.stats()["tasks_waiting"] == 3, 10)
    # As with tasks queued for a worker: the drain (0.6 s) lets waiting tasks start while it lasts
    # (the second does, at 0.4 s); those that never started are answered when it ends.
    assert node.stop(timeout=0.6) is False
    assert hub.wait_result(ids[0])["status"] == "completed"
    for tid in ids[2:]:
        assert hub.wait_result(tid)["error"] == "NodeShuttingDown: node stopped before the task started"
    assert wait_until(lambda: len(slow.spans) == 2, 5)
    assert [tid for tid, *_ in slow.spans] == ids[:2]


def test_waiting_tasks_on_tasks_and_metrics(make_node, hub: LocalHub) -> None:
    posts = Timeline()
    posts.gate.clear()
    node = started_node(make_node, hub, lambda c: c.register_task_handler(
        "post", posts.handler(), key="account", concurrency=1))
    ids = [hub.send_task("post", {"account": a}) for a in ("alice", "alice", "alice", "bob", "bob")]
    assert wait_until(lambda: node.stats()["tasks_waiting"] == 3, 10)
    server = MetricsServer(stats=node.stats, failed=lambda: False, host="127.0.0.1", port=0, log=node.log,
                           tasks=node.running_tasks, waiting=node.waiting_tasks)
    server.start()
    try:
        with requests.Session() as http:
            http.trust_env = False
            page = http.get(f"http://127.0.0.1:{server.port}/tasks", timeout=5).json()
            text = http.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
    finally:
        server.stop()
    assert sorted(page["waiting"], key=lambda lane: lane["key"]) == [
        {"task_type": "post", "key": "alice", "tasks": ids[1:3]}, {"task_type": "post", "key": "bob", "tasks": ids[4:]}]
    assert 'octohub_node_tasks_waiting{pc_id="%s"} 3' % node.pc_id in text
    assert 'octohub_node_tasks_waiting_by_type{pc_id="%s",task_type="post"} 3' % node.pc_id in text
    posts.gate.set()
    results(hub, ids)


def test_the_limits_guide_example_runs_against_the_local_hub() -> None:
    assert run_doc_example("docs/limits.md") == [
        "['completed', 'completed', 'completed', 'completed']", "[('alice', 1), ('bob', 1)]", "True"]


def test_the_rate_thread_sleeps_while_a_task_waits(make_node, hub: LocalHub) -> None:
    node = started_node(make_node, hub, lambda c: c.register_task_handler("hourly", lambda task: "ran", rate="1/h"))
    first, second = hub.send_task("hourly", {}), hub.send_task("hourly", {})
    assert hub.wait_result(first)["result"] == "ran"
    assert wait_until(lambda: node.stats()["tasks_waiting"] == 1, 10)
    thread = next(t for t in threading.enumerate() if t.name == "octohub-limits")
    process = psutil.Process()

    def cpu() -> float:
        return next(t.user_time + t.system_time for t in process.threads() if t.id == thread.native_id)

    before = cpu()
    threading.Event().wait(0.5)  # an interval to measure over, not a wait for something
    assert cpu() - before < 0.05  # a loop polling the clock would burn most of the 0.5 s
    hub.cancel(second)
    assert hub.wait_result(second)["error"].startswith("TaskCancelled")
