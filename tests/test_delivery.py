"""Results reach the hub or are never silent: delivery confirmation, the outbox while disconnected,
size limits, loud repeated failures; ResultDelivery and the outbox without a socket."""
from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from octohub_sync import ConfigError, load_settings
from octohub_sync._node.connection_log import REPEAT_WARNING_INTERVAL, ConnectionLog
from octohub_sync._delivery.delivery import ACK_PREFIX, CONFIRM_TIMEOUT, WRITE_BYTES, ResultDelivery, _writes
from octohub_sync.hub import LocalHub
from octohub_sync._delivery.outbox import Outbox, Result
from octohub_sync._ops.stats import Stats

from .conftest import (KEY, Gate, RecordingConnection, RecordingStore, connected_node, make_delivery, result_frame,
                       wait_until)
from .proxy import StallProxy


def test_results_are_confirmed_by_the_hub(make_node, hub: LocalHub) -> None:
    client = make_node()
    assert client.wait_connected(10)
    ids = [hub.send_task("echo", {"n": n}) for n in range(50)]
    assert all(hub.wait_result(t)["status"] == "completed" for t in ids)
    # Every result was confirmed by a pong, none was sent twice.
    assert wait_until(lambda: client.stats()["results_unconfirmed"] == 0, 5), client.stats()
    assert client.stats()["results_resent"] == 0
    assert all(len(hub.results[t]) == 1 for t in ids)


def test_result_written_into_a_dead_path_is_sent_again(make_node, caplog) -> None:
    # No redelivery: the hub never asks again, so only the node's own re-send can bring the result.
    caplog.set_level(logging.INFO, logger="octohub_sync")
    with LocalHub(KEY, redeliver=False) as hub:
        proxy = StallProxy(hub.ws_port)
        try:
            started, release = threading.Event(), threading.Event()
            client = make_node(_hub=hub, _start=False, connect_mode="direct", ws_port=proxy.port,
                               ping_interval=0.5, ping_timeout=0.3)
            client.register_task_handler("slow", lambda task: (started.set(), release.wait(10), "done")[2])
            client.start()
            assert client.wait_connected(10)
            tid = hub.send_task("slow")
            assert started.wait(10)
            proxy.stall()  # TCP stays up, nothing passes: the result is written, the hub never reads it
            release.set()
            assert wait_until(lambda: client.stats()["tasks_completed"] == 1, 10)
            result = hub.wait_result(tid, 15)  # after the missing pong, the reconnect and node_ready
            assert result["result"] == "done"
            assert client.stats()["results_resent"] == 1
            assert len(hub.results[tid]) == 1
            assert any("not confirmed by the hub" in r.getMessage() for r in caplog.records)
        finally:
            proxy.close()


def test_result_over_the_limit_is_answered_failed(make_node, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    # A hub enforcing the real config's 1 MiB limit: without the node's own limit the result is lost.
    with LocalHub(KEY, dialect="go", max_size=2**20) as hub:
        client = make_node(_hub=hub, _start=False)
        client.register_task_handler("big", lambda task: "x" * 1_500_000)
        client.start()
        assert client.wait_connected(10)
        result = hub.wait_result(hub.send_task("big"))
        assert result["status"] == "failed"
        assert result["error"].startswith("ResultTooLarge: 1500") and "limit 1048576" in result["error"]
        assert client.stats()["tasks_failed"] == 1
        assert hub.wait_result(hub.send_task("echo"))["status"] == "completed"  # same session goes on
        assert len(hub.connections) == 1
    assert any("ResultTooLarge" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_result_limit_zero_means_none(make_node, hub: LocalHub) -> None:
    client = make_node(_start=False, max_result_bytes=0)
    client.register_task_handler("big", lambda task: "x" * 1_500_000)
    client.start()
    assert client.wait_connected(10)
    assert hub.wait_result(hub.send_task("big"))["result"] == "x" * 1_500_000


@pytest.mark.parametrize("dialect", ["seed", "go"])
def test_task_over_the_message_limit_is_answered_failed(make_node, dialect: str) -> None:
    with LocalHub(KEY, dialect=dialect) as hub:
        client = make_node(_hub=hub, max_message_bytes=1024)
        assert client.wait_connected(10)
        tid = hub.send_task("echo", {"pad": "x" * 5000})
        result = hub.wait_result(tid)
        assert result["status"] == "failed" and result["error"].startswith("TaskTooLarge: frame of ")
        assert "OCTOHUB_MAX_MESSAGE_BYTES=1024" in result["error"]
        assert client.stats()["tasks_rejected"] == 1 and client.stats()["bad_frames"] == 0
        # An oversized frame whose task_id is ambiguous (another one inside data) stays unanswered.
        hub.send_raw(json.dumps({"type": "task", "task_id": "a", "task_type": "echo",
                                 "data": {"task_id": "b", "pad": "x" * 5000}}), pc_id=client.pc_id)
        assert wait_until(lambda: client.stats()["bad_frames"] == 1, 5)
        assert hub.wait_result(hub.send_task("echo"))["status"] == "completed"
        assert "a" not in hub.results and "b" not in hub.results


def test_wrong_key_is_a_warning_once_then_quiet(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    hub.api_fault = "401"
    make_node()

    def logged() -> list[logging.LogRecord]:  # the counter goes up before its line is logged: wait for the lines
        return [r for r in caplog.records if "connection" in r.getMessage() and "failed (" in r.getMessage()]

    assert wait_until(lambda: len(logged()) >= 4, 15)
    failures = logged()
    warnings = [r for r in failures if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and len(failures) >= 4
    assert "HTTP 401" in warnings[0].getMessage() and "OCTOHUB_SIGNATURE_KEY" in warnings[0].getMessage()


def test_repeated_failures_warn_again_after_the_interval() -> None:
    level = ConnectionLog(pc_id="node_x", stats=Stats(), log=logging.LoggerAdapter(logging.getLogger("t"), {})).failure_level
    assert level("AuthError/401", now=0.0) == (logging.WARNING, 0)
    assert level("AuthError/401", now=1.0) == (logging.INFO, 0)
    assert level("ConnectionRefusedError", now=2.0) == (logging.WARNING, 0)  # another kind is news
    assert level("AuthError/401", now=3.0) == (logging.INFO, 0)
    # After the interval it warns again and says how many it kept quiet about.
    assert level("AuthError/401", now=REPEAT_WARNING_INTERVAL) == (logging.WARNING, 2)


def test_direct_mode_signs_with_the_websocket_servers_key(make_node) -> None:
    # The hub's WebSocket server has its own key; the node's API key is another one.
    with LocalHub("ws-server-key-123") as hub:
        client = make_node(_hub=hub, connect_mode="direct", signature_key="api-server-key-456",
                           ws_signature_key="ws-server-key-123")
        assert client.wait_connected(10)
        wrong = make_node(_hub=hub, connect_mode="direct", signature_key="api-server-key-456", pc_id="node_wrong")
        assert wait_until(lambda: wrong.stats()["connect_failures"] >= 1, 10)
        assert "OCTOHUB_WS_SIGNATURE_KEY" in (wrong.stats()["last_error"] or "")


def test_direct_mode_without_any_key_names_the_websocket_key() -> None:
    from octohub_sync import NodeWebSocketClient

    settings = load_settings({"connect_mode": "direct"}, env_file=False, environ={})
    with pytest.raises(ConfigError, match="OCTOHUB_WS_SIGNATURE_KEY"):
        NodeWebSocketClient(settings=settings)


# -- the outbox: results produced while disconnected wait in it and follow node_ready ----------


@pytest.mark.parametrize("redeliver", [True, False])
def test_result_of_task_running_during_drop_arrives_after_reconnect(make_node, redeliver: bool) -> None:
    with LocalHub(KEY, redeliver=redeliver) as h:
        gate = Gate()
        client = connected_node(make_node, {"slow": gate.handler("done")}, _hub=h)
        tid = h.send_task("slow")
        assert gate.started.wait(10)
        h.stop_ws()  # dropped, and no way back until the result waits in the outbox
        assert wait_until(lambda: not client.is_connected(), 10)
        gate.release.set()
        assert wait_until(lambda: client.stats()["outbox"] == 1, 10)
        h.start_ws()
        assert h.wait_for(lambda: tid in h.results, 10)
        # The outbox's copy follows node_ready. A hub that redelivers sends the task again when it reads
        # node_ready, before that copy: the node answers it with the stored result, byte for byte, and
        # does not run it again.
        assert h.wait_for(lambda: len(h.results[tid]) == (2 if redeliver else 1), 5)
        assert not h.wait_for(lambda: len(h.results[tid]) > (2 if redeliver else 1), 0.5)
        results = h.results[tid]
        assert results[0]["result"] == "done" and all(r == results[0] for r in results)
        assert client.stats()["tasks_completed"] == 1
        assert client.stats()["tasks_duplicate"] == (1 if redeliver else 0)


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


# -- Outbox and ResultDelivery without a socket ------------------------------------------------


def test_outbox_put_back_keeps_order_and_gives_up_the_oldest() -> None:
    a, b, c, d = (Result(seq, name, name.upper()) for seq, name in enumerate("abcd", 1))
    box = Outbox(3)
    assert box.put(a) == [] and box.put(b) == []
    taken = box.take_all()
    assert taken == [a, b] and len(box) == 0
    box.put(c)  # arrived while a and b were being sent
    box.put(d)
    assert box.put_back(taken) == [a]  # a, b, c, d do not fit in 3: the oldest goes
    assert box.take_all() == [b, c, d]
    assert box.put_back([]) == []


def test_failed_result_send_keeps_the_result_and_aborts() -> None:
    stats = Stats()
    delivery = make_delivery(stats)
    conn = RecordingConnection(fail=True)
    delivery.link.attach(conn)  # type: ignore[arg-type]
    delivery.mark_ready()  # node_ready went out
    delivery.deliver("t1", result_frame("t1"))
    assert conn.aborted >= 1 and len(delivery.outbox) == 1  # kept for the next node_ready
    assert delivery.unconfirmed() == 0 and conn.pings == []  # never written: nothing to confirm
    delivery.detach(RecordingConnection())  # type: ignore[arg-type]  # an older connection ending changes nothing
    assert delivery.link.ready
    delivery.detach(conn)  # type: ignore[arg-type]
    assert not delivery.link.ready and not delivery.link.wait_ready(0)
    fresh = RecordingConnection()
    delivery.link.attach(fresh)  # type: ignore[arg-type]
    delivery.mark_ready()
    assert [(m["type"], m.get("task_id")) for m in fresh.sent] == [("task_result", "t1")]
    assert fresh.pings == [ACK_PREFIX + b"1"] and delivery.unconfirmed() == 1
    delivery.pong(fresh, ACK_PREFIX + b"1")  # type: ignore[arg-type]
    assert delivery.unconfirmed() == 0
    assert len(delivery.outbox) == 0 and stats.snapshot()["results_dropped"] == 0


def test_results_arriving_during_a_failed_flush_are_kept_within_the_outbox_size(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    stats = Stats()
    delivery = make_delivery(stats, outbox_size=2)
    conn = RecordingConnection()
    delivery.link.attach(conn)  # type: ignore[arg-type]
    delivery.mark_ready()
    delivery.link.set_ready(False)  # as between a drop and the watchdog noticing it: results go to the outbox
    delivery.deliver("a", result_frame("a"))
    delivery.deliver("b", result_frame("b"))
    delivery.link.set_ready(True)

    def two_more_results() -> None:  # worker threads delivering while the flush holds a and b
        conn.on_send = None
        delivery.outbox.put(Result(3, "c", result_frame("c")))
        delivery.outbox.put(Result(4, "d", result_frame("d")))

    conn.on_send, conn.fail = two_more_results, True
    delivery.send_outbox()
    assert [result.task_id for result in delivery.outbox.take_all()] == ["c", "d"]  # the newest two
    assert stats.snapshot()["results_dropped"] == 2
    assert any("dropped the result of task(s) a, b" in r.getMessage() for r in caplog.records)


def test_confirmation_pongs_do_not_fool_the_keep_alive(make_node, hub: LocalHub) -> None:
    # Confirmation pongs arrive all the time under load. websocket-client's own ping timeout takes
    # any pong for the answer to its last keep-alive ping, and would end a healthy connection
    # ping_timeout seconds after each one; the node judges silence itself instead.
    client = make_node(ping_interval=0.4, ping_timeout=0.2)
    assert client.wait_connected(10)
    deadline = time.monotonic() + 4 * (0.4 + 0.2)
    while time.monotonic() < deadline:  # a steady stream of results, several keep-alive periods long
        assert hub.wait_result(hub.send_task("echo"), 5)["status"] == "completed"
    assert len(hub.connections) == 1 and client.stats()["reconnects"] == 0


def stalled_sender(first: str) -> tuple[ResultDelivery, RecordingConnection, threading.Thread, threading.Event]:
    """A ready delivery whose thread sending ``first`` is stalled in its write until the event is set."""
    delivery = make_delivery(Stats())
    conn = RecordingConnection()
    delivery.link.attach(conn)  # type: ignore[arg-type]
    delivery.mark_ready()
    in_send, release = threading.Event(), threading.Event()

    def slow_socket() -> None:
        conn.on_send = None
        in_send.set()
        release.wait(10)

    conn.on_send = slow_socket
    sender = threading.Thread(target=delivery.deliver, args=(first, result_frame(first)))
    sender.start()
    assert in_send.wait(10)
    return delivery, conn, sender, release


def test_while_one_worker_sends_the_others_do_not_wait_and_their_results_follow_in_order() -> None:
    delivery, conn, first, release = stalled_sender("a")
    others = [threading.Thread(target=delivery.deliver, args=(t, result_frame(t))) for t in "bcd"]
    for t in others:
        t.start()
        t.join(10)
        assert not t.is_alive()  # handed its result over and went back to work: no wait on the socket
    assert conn.sent == []
    release.set()
    first.join(10)
    assert [m["task_id"] for m in conn.sent] == ["a", "b", "c", "d"]  # all sent by the first, in order
    assert delivery.unconfirmed() == 4


def test_a_failure_inside_the_sending_thread_leaves_nothing_waiting_for_the_next_result() -> None:
    delivery = make_delivery(Stats())
    conn = RecordingConnection()
    delivery.link.attach(conn)  # type: ignore[arg-type]
    delivery.mark_ready()
    original = delivery._queue._send
    calls = []

    def breaks_once(results: list[Result]) -> None:
        calls.append([result.task_id for result in results])
        if len(calls) == 1:
            raise RuntimeError("bug in the send path")
        original(results)

    delivery._queue._send = breaks_once  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        delivery.deliver("a", result_frame("a"))
    assert delivery.waiting() == 1 and len(delivery.outbox) == 1  # not in a queue that nobody looks at
    delivery.tick()  # the send thread's periodic look: no need for another result to come along
    assert [m["task_id"] for m in conn.sent] == ["a"]
    delivery.deliver("b", result_frame("b"))  # not stuck behind a "sending" flag nobody clears
    assert [m["task_id"] for m in conn.sent] == ["a", "b"]


def test_the_stops_last_sending_waits_for_a_thread_still_sending_and_what_queued_behind_it() -> None:
    # A worker's result queued behind the frame reader's answer, which is stalled in its write when
    # the stop sends for the last time: both must be written before the close frame.
    delivery, conn, first, release = stalled_sender("refused")
    delivery.deliver("held", result_frame("held"))  # queued behind the stalled write; returns at once

    def stop() -> None:  # client.stop's last steps
        delivery.settle(timeout=10)
        conn.begin_close()

    stopping = threading.Thread(target=stop)
    stopping.start()
    assert wait_until(lambda: delivery._queue._settling == 1, 10)  # the stop waits for the sender
    release.set()
    stopping.join(10)
    first.join(10)
    assert [m["task_id"] for m in conn.sent] == ["refused", "held"] and delivery.waiting() == 0


def raising_send_left_one_queued() -> tuple[ResultDelivery, RecordingConnection]:
    """A ready delivery whose send of "a" raised (a bug of ours) after another worker queued "queued"."""
    delivery = make_delivery(Stats())
    conn = RecordingConnection()
    delivery.link.attach(conn)  # type: ignore[arg-type]
    delivery.mark_ready()
    original = delivery._queue._send

    def queues_one_more_then_breaks(results: list[Result]) -> None:
        delivery._queue._send = original  # type: ignore[method-assign]
        delivery.deliver("queued", result_frame("queued"))  # another worker's, queued meanwhile
        raise RuntimeError("bug in the send path")

    delivery._queue._send = queues_one_more_then_breaks  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        delivery.deliver("a", result_frame("a"))
    assert len(delivery._queue) == 1  # nobody sends it now
    return delivery, conn


def test_the_stops_last_sending_sends_what_a_raising_send_left_queued() -> None:
    delivery, conn = raising_send_left_one_queued()
    delivery.settle(timeout=10)
    assert sorted(m["task_id"] for m in conn.sent) == ["a", "queued"] and delivery.waiting() == 0


def test_the_stops_last_sending_waits_for_a_handshake_under_way() -> None:
    # A connection open but not ready yet (node_ready written, not marked; or the hub's "connected" not
    # answered) when the stop sends for the last time: the kept result goes out on it before the close.
    delivery = make_delivery(Stats())
    conn = RecordingConnection()
    delivery.link.attach(conn)  # type: ignore[arg-type]  # open, handshake under way
    delivery.deliver("held", result_frame("held"))  # not ready: kept in the outbox
    done = threading.Event()

    def stop() -> None:
        delivery.settle(timeout=10)
        done.set()

    stopping = threading.Thread(target=stop)
    stopping.start()
    assert not done.wait(0.2)  # it waits for the handshake: the result would miss the connection otherwise
    delivery.mark_ready()  # the connection thread finishes the handshake
    stopping.join(10)
    assert done.is_set() and [m["task_id"] for m in conn.sent] == ["held"] and delivery.waiting() == 0


def test_the_next_sender_sends_what_a_raising_send_left_queued_before_its_own() -> None:
    delivery, conn = raising_send_left_one_queued()
    delivery.deliver("b", result_frame("b"))  # the next worker becomes the sender: the leftover goes first
    assert [m["task_id"] for m in conn.sent][-2:] == ["queued", "b"] and len(delivery._queue) == 0


def test_a_result_that_lands_in_the_outbox_of_a_ready_connection_does_not_wait_for_the_next_one() -> None:
    delivery = make_delivery(Stats())
    conn = RecordingConnection()
    delivery.link.attach(conn)  # type: ignore[arg-type]
    delivery.mark_ready()
    # As when a worker found the connection not ready and kept its result just after node_ready's flush.
    delivery.outbox.put(Result(7, "late", result_frame("late")))
    delivery.tick()
    assert [m["task_id"] for m in conn.sent] == ["late"] and delivery.waiting() == 0


# -- the node's own close: nothing written after its close frame counts as delivered -------------


def ready_delivery() -> tuple[ResultDelivery, RecordingConnection, RecordingStore]:
    """A delivery whose connection is ready (node_ready sent), with a store that records removals."""
    store = RecordingStore()
    delivery = make_delivery(Stats(), store=store)
    conn = RecordingConnection()
    delivery.link.attach(conn)  # type: ignore[arg-type]
    delivery.mark_ready()
    return delivery, conn, store


def test_a_result_after_begin_close_stays_in_the_store_and_goes_out_on_the_next_connection() -> None:
    delivery, conn, store = ready_delivery()
    delivery.deliver("before", result_frame("before"))
    conn.begin_close()  # our close frame is on its way
    delivery.deliver("after", result_frame("after"))
    assert [m["task_id"] for m in conn.sent] == ["before"]  # nothing written after the close frame
    conn.hub_answered_close()
    delivery.detach(conn)  # type: ignore[arg-type]
    # The clean close confirms what was written before it, and only that.
    assert store.removed == [1] and delivery.waiting() == 1
    fresh = RecordingConnection()
    delivery.link.attach(fresh)  # type: ignore[arg-type]
    delivery.mark_ready()
    assert [m["task_id"] for m in fresh.sent] == ["after"] and store.removed == [1]


def test_a_close_the_hub_never_answered_sends_everything_again() -> None:
    delivery, conn, store = ready_delivery()
    delivery.deliver("a", result_frame("a"))
    conn.begin_close()
    delivery.detach(conn)  # type: ignore[arg-type]  # aborted after CLOSE_TIMEOUT: no close frame came back
    assert store.removed == [] and [r.task_id for r in delivery.outbox.take_all()] == ["a"]


def test_a_pong_confirms_every_result_up_to_its_number_and_an_unanswered_ping_is_sent_again(monkeypatch) -> None:
    delivery, conn, store = ready_delivery()
    clock = [1000.0]
    monkeypatch.setattr("octohub_sync._delivery.delivery.time.monotonic", lambda: clock[0])
    delivery.deliver("a", result_frame("a"))
    assert conn.pings == [ACK_PREFIX + b"1"]
    delivery.deliver("b", result_frame("b"))  # covered by the next ping
    clock[0] += CONFIRM_TIMEOUT - 0.01
    delivery.tick()
    assert len(conn.pings) == 1  # the first one's pong may still come
    clock[0] += 0.02
    delivery.tick()  # it did not: ask again, for everything sent since
    assert conn.pings == [ACK_PREFIX + b"1", ACK_PREFIX + b"2"]
    delivery.pong(conn, ACK_PREFIX + b"2")  # type: ignore[arg-type]  # the hub answered only the latest ping
    assert delivery.unconfirmed() == 0 and store.removed == [1, 2]
    delivery.pong(conn, ACK_PREFIX + b"1")  # type: ignore[arg-type]  # a late pong changes nothing
    delivery.pong(conn, ACK_PREFIX + b"9")  # type: ignore[arg-type]  # nor one for a ping never sent
    assert store.removed == [1, 2]


def test_several_results_in_one_write_reach_a_real_hub_whole_and_in_order(node, hub: LocalHub) -> None:
    conn = node.delivery.link.conn
    big = "x" * 70_000  # larger than the other frames together: a frame of its own, unmangled
    frames = [result_frame(f"w-{n}") for n in range(3)] + [result_frame(big)] + [result_frame("w-4")]
    conn.send_many(frames)
    assert hub.wait_for(lambda: "w-4" in hub.results, 10)
    got = [m["task_id"] for m in hub.received if m.get("type") == "task_result"]
    assert got == ["w-0", "w-1", "w-2", big, "w-4"]


def test_results_queued_behind_a_send_are_cut_into_writes_of_bounded_size() -> None:
    small = [Result(n, f"s{n}", "a" * 1000) for n in range(100)]
    huge = Result(100, "h", "b" * (WRITE_BYTES + 1))
    writes = _writes(small[:70] + [huge] + small[70:])
    assert [r for w in writes for r in w] == small[:70] + [huge] + small[70:]  # nothing lost or reordered
    assert [huge] in writes
    assert all(sum(len(r.frame) for r in w) <= WRITE_BYTES for w in writes if w != [huge])
    assert [len(w) for w in writes] == [65, 5, 1, 30]  # 65 of 1000 bytes fit in 64 KiB


def test_at_the_bound_the_sender_waits_for_a_pong_and_a_path_that_confirms_nothing_is_ended() -> None:
    delivery = ResultDelivery(outbox_size=1, store=RecordingStore(), stats=Stats(), confirm_deadline=0.5,
                              log=logging.LoggerAdapter(logging.getLogger("octohub_sync.test"), {}))
    conn = RecordingConnection()
    delivery.link.attach(conn)  # type: ignore[arg-type]
    delivery.mark_ready()
    delivery.deliver("a", result_frame("a"))  # the one result that may wait for confirmation
    second = threading.Thread(target=delivery.deliver, args=("b", result_frame("b")), name="test-worker")
    second.start()
    assert wait_until(lambda: delivery.waiting() == 1, 5)  # in the sending thread's hands, not dropped
    assert [m["task_id"] for m in conn.sent] == ["a"]
    delivery.pong(conn, ACK_PREFIX + b"1")  # type: ignore[arg-type]  # room for one more
    second.join(5)
    assert not second.is_alive() and [m["task_id"] for m in conn.sent] == ["a", "b"] and conn.aborted == 0
    third = threading.Thread(target=delivery.deliver, args=("c", result_frame("c")), name="test-worker")
    third.start()
    third.join(5)  # no pong for b: after confirm_deadline the path counts as dead
    assert not third.is_alive() and conn.aborted == 1 and delivery.waiting() == 1


def test_large_frames_both_ways_at_once_never_stall_the_connection(make_node, hub: LocalHub) -> None:
    # 1 MB tasks in and 1 MB results out at once, 32 in flight: the connection thread must go on
    # reading while a worker's write waits for the hub, whose own reader waits behind its writes
    # (the local hub's does): before, it wrote a confirmation ping itself, the two sides waited for
    # each other, and the write's bound (OCTOHUB_CONNECT_TIMEOUT) ended the connection, again and again.
    client = make_node(connect_timeout=2.0, max_workers=16)
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    pad = "x" * 1_000_000
    total, in_flight = 80, 32
    sent: list[str] = []
    failed: list[BaseException] = []

    def feed() -> None:
        try:
            while len(sent) < total:
                if not hub.wait_for(lambda: len(sent) - sum(1 for t in sent if t in hub.results) < in_flight, 30):
                    raise TimeoutError("results stopped coming")
                sent.append(hub.send_task("echo", {"pad": pad}, pc_id=client.pc_id))
        except BaseException as exc:  # reported by the test thread
            failed.append(exc)

    feeder = threading.Thread(target=feed, name="test-feeder", daemon=True)
    feeder.start()
    assert hub.wait_for(lambda: len(sent) == total and all(t in hub.results for t in sent) or bool(failed), 90)
    feeder.join(10)
    assert not failed, failed
    assert all(hub.results[t][0]["status"] == "completed" and len(hub.results[t][0]["result"]["echo"]["pad"]) == len(pad)
               for t in sent)
    assert len([c for c in hub.connections if c["pc_id"] == client.pc_id]) == 1  # never dropped


def test_the_hubs_ping_is_answered_with_its_payload(make_node, hub: LocalHub) -> None:
    client = make_node()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    session = hub.sessions(client.pc_id)[-1]
    for payload in (b"hub-ping-1", b"", bytes(range(125))):  # up to the longest a ping may carry
        assert session.ws.ping(payload).wait(5), payload  # websockets matches the pong by its payload
