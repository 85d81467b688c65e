"""FrameReceiver without a socket: the handshake, tasks to the runner, message handlers in order, bugs contained."""
from __future__ import annotations

import json
import logging
from typing import Any

from octohub_sync._wire.protocol import Task
from octohub_sync._node.receiver import FrameReceiver
from octohub_sync._ops.stats import Stats

from .conftest import RecordingConnection, make_delivery, result_frame, wait_until


class Receiving:
    """A FrameReceiver wired to a real ResultDelivery (no ledger) and a runner that records tasks.

    A task of type ``bug`` makes the runner raise, as a bug of ours would.
    """

    def __init__(self, stats: Stats) -> None:
        self.delivery = make_delivery(stats)
        self.notices: list[bool] = []
        self.submitted: list[Task] = []
        self.receiver = FrameReceiver(
            pc_id="node_receiver", max_message_bytes=2**20, capacity=4, delivery=self.delivery,
            submit=self.submit, refuse_unread=lambda task_id, error: None, cancel=lambda task_id, reason: None,
            task_types=lambda: ["echo"],
            on_notice=self.notices.append, stats=stats, log=logging.LoggerAdapter(logging.getLogger("octohub_sync.test"), {}),
            on_ready=self.ready)
        self.readied = 0

    def ready(self) -> None:
        self.readied += 1

    def submit(self, task: Task) -> None:
        if task.task_type == "bug":
            raise RuntimeError("a bug of ours")
        self.submitted.append(task)

    def frame(self, conn: RecordingConnection, **message: Any) -> None:
        self.receiver.frame(conn, json.dumps(message), False)  # type: ignore[arg-type]


def test_failed_node_ready_aborts_and_stays_not_ready() -> None:
    node = Receiving(Stats())
    conn = RecordingConnection(fail=True)
    node.delivery.link.attach(conn)  # type: ignore[arg-type]
    node.frame(conn, type="connected")
    assert conn.aborted == 1 and not node.delivery.link.ready and node.readied == 0
    node.delivery.deliver("t1", result_frame("t1"))  # not ready: kept
    assert len(node.delivery.outbox) == 1


def test_node_ready_goes_out_before_the_results_kept_while_disconnected() -> None:
    stats = Stats()
    node = Receiving(stats)
    node.delivery.deliver("t1", result_frame("t1"))  # no connection yet: kept
    conn = RecordingConnection()
    node.delivery.link.attach(conn)  # type: ignore[arg-type]
    node.frame(conn, type="connected")
    assert [(m["type"], m.get("task_id")) for m in conn.sent] == [("node_ready", None), ("task_result", "t1")]
    assert conn.sent[0]["task_types"] == ["echo"] and conn.sent[0]["capacity"] == 4
    assert node.delivery.link.ready and node.readied == 1  # the node's state is the node's to change, told so


def test_message_handlers_run_in_order_and_a_failing_one_is_logged(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="octohub_sync")
    node = Receiving(Stats())
    conn = RecordingConnection()
    seen: list[Any] = []

    def handle(message: Any) -> None:
        seen.append(message["n"])
        if message["n"] == 1:
            raise ValueError("handler bug")

    node.receiver.message_handlers["note"] = handle
    for n in range(3):
        node.frame(conn, type="note", n=n)
    assert wait_until(lambda: len(seen) == 3, 5), seen
    node.receiver.close()
    assert seen == [0, 1, 2]
    failed = [r for r in caplog.records if "message handler for 'note' failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None


def test_a_bug_while_handling_a_frame_is_counted_and_the_next_frame_handled(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="octohub_sync")
    stats = Stats()
    node = Receiving(stats)
    conn = RecordingConnection()
    node.frame(conn, type="task", task_id="t1", task_type="bug")
    assert stats.snapshot()["bad_frames"] == 1
    assert any("could not handle a 'task' message" in r.getMessage() and r.exc_info for r in caplog.records)
    node.frame(conn, type="task", task_id="t2", task_type="echo")
    node.frame(conn, type="disconnect_notification", reason="replaced")
    assert [t.task_id for t in node.submitted] == ["t2"]
    assert node.notices == [True]
