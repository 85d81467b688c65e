"""Link and outbox: results produced while disconnected wait in the bounded outbox and follow node_ready."""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Optional

from octohub_sync import load_settings
from octohub_sync.hub import LocalHub
from octohub_sync.link import Link
from octohub_sync.outbox import Outbox
from octohub_sync.stats import Stats

from .conftest import KEY, Gate, connected_node, wait_until


def test_result_of_task_running_during_drop_arrives_after_reconnect(make_node, hub: LocalHub) -> None:
    for redeliver in (True, False):
        with LocalHub(KEY, redeliver=redeliver) as h:
            gate = Gate()
            client = connected_node(make_node, {"slow": gate.handler("done")}, _hub=h, pc_id=f"node_drop{int(redeliver)}")
            tid = h.send_task("slow")
            assert gate.started.wait(10)
            h.drop(client.pc_id)
            assert wait_until(lambda: not client.is_connected(), 10)
            gate.release.set()  # finishes while disconnected: the result waits in the outbox
            assert h.wait_for(lambda: tid in h.results, 10)
            # With redelivery the hub may re-send the task after the outbox flush; the node then
            # answers with the stored result, so duplicates are identical and the task ran once.
            results = h.results[tid]
            assert {r["result"] for r in results} == {"done"} and all(r == results[0] for r in results)
            assert len(results) == 1 or redeliver
            assert client.stats()["tasks_completed"] == 1
            client.stop(5)


def test_full_outbox_gives_up_oldest_and_counts(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    with LocalHub(KEY, redeliver=False) as h:
        gate = Gate()
        client = connected_node(make_node, {"slow": gate.handler(lambda task: task["task_id"])},
                                _hub=h, outbox_size=2, pc_id="node_outbox")
        ids = [h.send_task("slow") for _ in range(4)]
        assert wait_until(lambda: client.stats()["tasks_running"] == 4, 10)
        h.stop_ws()  # no way back while the results are produced
        assert wait_until(lambda: not client.is_connected(), 10)
        gate.release.set()
        assert wait_until(lambda: client.stats()["tasks_completed"] == 4, 10)
        assert client.stats()["results_dropped"] == 2 and client.stats()["outbox"] == 2
        assert any("outbox full" in r.getMessage() for r in caplog.records)
        h.start_ws()
        assert h.wait_for(lambda: len(h.results) == 2, 10)
        assert set(h.results) < set(ids)


def test_stop_while_disconnected_reports_the_unsent_result(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    gate = Gate()
    client = connected_node(make_node, {"slow": gate.handler("done")})
    hub.send_task("slow")
    assert gate.started.wait(10)
    hub.stop_ws()
    assert wait_until(lambda: not client.is_connected(), 10)
    gate.release.set()
    assert wait_until(lambda: client.stats()["outbox"] == 1, 10)
    assert client.stop(timeout=5) is False  # one result could not be sent
    assert any("stopped with 1 result(s) not sent" in r.getMessage() for r in caplog.records)


# -- Outbox and Link without a socket ----------------------------------------------------------


def test_outbox_put_back_keeps_order_and_gives_up_the_oldest() -> None:
    box = Outbox(3)
    box.put("a", "A")
    box.put("b", "B")
    taken = box.take_all()
    assert taken == [("a", "A"), ("b", "B")] and len(box) == 0
    box.put("c", "C")  # arrived while a and b were being sent
    box.put("d", "D")
    assert box.put_back(taken) == ["a"]  # a, b, c, d do not fit in 3: the oldest goes
    assert box.take_all() == [("b", "B"), ("c", "C"), ("d", "D")]
    assert box.put_back([]) == []


class FakeConnection:
    """What Link uses of a Connection: send() and abort(). ``fail`` makes every send raise."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[dict] = []
        self.fail = fail
        self.aborted = 0
        self.on_send: Optional[Callable[[], None]] = None

    def send(self, frame: str) -> None:
        if self.on_send is not None:
            self.on_send()
        if self.fail:
            raise OSError("broken pipe")
        self.sent.append(json.loads(frame))

    def abort(self) -> None:
        self.aborted += 1


class FakeRunner:
    handlers = {"echo": None}

    def __init__(self) -> None:
        self.submitted: list = []

    def submit(self, task: Any) -> None:
        if task.task_type == "bug":
            raise RuntimeError("a bug of ours")
        self.submitted.append(task)


def make_link(stats: Stats, outbox_size: int = 10) -> tuple[Link, list[bool]]:
    notices: list[bool] = []
    settings = load_settings({"outbox_size": outbox_size}, env_file=False, environ={})
    link = Link(settings=settings, pc_id="node_link", stats=stats,
                log=logging.LoggerAdapter(logging.getLogger("octohub_sync.test"), {}), on_notice=notices.append)
    link.runner = FakeRunner()  # type: ignore[assignment]
    return link, notices


def frame(**message: Any) -> str:
    return json.dumps(message)


def result(task_id: str) -> str:
    return frame(type="task_result", task_id=task_id, status="completed", result=task_id)


def test_failed_node_ready_aborts_and_stays_not_ready() -> None:
    link, _ = make_link(Stats())
    conn = FakeConnection(fail=True)
    link.attach(conn)  # type: ignore[arg-type]
    link.frame(conn, frame(type="connected"), False)  # type: ignore[arg-type]
    assert conn.aborted == 1 and not link.ready and not link.connected.is_set()
    link.deliver("t1", result("t1"))  # not ready: kept
    assert len(link.outbox) == 1


def test_failed_result_send_keeps_the_result_and_aborts() -> None:
    stats = Stats()
    link, _ = make_link(stats)
    conn = FakeConnection()
    link.attach(conn)  # type: ignore[arg-type]
    link.frame(conn, frame(type="connected"), False)  # type: ignore[arg-type]
    assert link.ready and [m["type"] for m in conn.sent] == ["node_ready"]
    conn.fail = True
    link.deliver("t1", result("t1"))
    assert conn.aborted >= 1 and len(link.outbox) == 1  # kept for the next node_ready
    link.detach(FakeConnection())  # type: ignore[arg-type]  # an older connection ending changes nothing
    assert link.ready
    link.detach(conn)  # type: ignore[arg-type]
    assert not link.ready and not link.connected.is_set()
    fresh = FakeConnection()
    link.attach(fresh)  # type: ignore[arg-type]
    link.frame(fresh, frame(type="connected"), False)  # type: ignore[arg-type]
    assert [(m["type"], m.get("task_id")) for m in fresh.sent] == [("node_ready", None), ("task_result", "t1")]
    assert len(link.outbox) == 0 and stats.snapshot()["results_dropped"] == 0


def test_results_arriving_during_a_failed_flush_are_kept_within_the_outbox_size(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    stats = Stats()
    link, _ = make_link(stats, outbox_size=2)
    conn = FakeConnection()
    link.attach(conn)  # type: ignore[arg-type]
    link.frame(conn, frame(type="connected"), False)  # type: ignore[arg-type]
    link.ready = False  # as between a drop and the watchdog noticing it: results go to the outbox
    link.deliver("a", result("a"))
    link.deliver("b", result("b"))
    link.ready = True

    def two_more_results() -> None:  # worker threads delivering while the flush holds a and b
        conn.on_send = None
        link.outbox.put("c", result("c"))
        link.outbox.put("d", result("d"))

    conn.on_send, conn.fail = two_more_results, True
    link.flush()
    assert [task_id for task_id, _ in link.outbox.take_all()] == ["c", "d"]  # the newest two
    assert stats.snapshot()["results_dropped"] == 2
    assert any("gave up the result of task(s) a, b" in r.getMessage() for r in caplog.records)


def test_message_handlers_run_in_order_and_a_failing_one_is_logged(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="octohub_sync")
    link, _ = make_link(Stats())
    conn = FakeConnection()
    seen: list[Any] = []

    def handle(message: Any) -> None:
        seen.append(message["n"])
        if message["n"] == 1:
            raise ValueError("handler bug")

    link.message_handlers["note"] = handle
    for n in range(3):
        link.frame(conn, frame(type="note", n=n), False)  # type: ignore[arg-type]
    assert wait_until(lambda: len(seen) == 3, 5), seen
    link.close()
    assert seen == [0, 1, 2]
    failed = [r for r in caplog.records if "message handler for 'note' failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None


def test_a_bug_while_handling_a_frame_is_counted_and_the_next_frame_handled(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="octohub_sync")
    stats = Stats()
    link, notices = make_link(stats)
    conn = FakeConnection()
    link.frame(conn, frame(type="task", task_id="t1", task_type="bug"), False)  # type: ignore[arg-type]
    assert stats.snapshot()["bad_frames"] == 1
    assert any("could not handle a 'task' message" in r.getMessage() and r.exc_info for r in caplog.records)
    link.frame(conn, frame(type="task", task_id="t2", task_type="echo"), False)  # type: ignore[arg-type]
    link.frame(conn, frame(type="disconnect_notification", reason="replaced"), False)  # type: ignore[arg-type]
    assert [t.task_id for t in link.runner.submitted] == ["t2"]  # type: ignore[union-attr]
    assert notices == [True]
