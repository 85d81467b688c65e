"""Nothing lost at a close, nothing stuck (issue 18), against a real local hub: a task the hub sends
while the node closes, a skipped confirmation pong, the bound on unconfirmed results, time limits
during a stop, the liveness loops beside a stalled send, the state during a stop."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from octohub_sync._delivery.delivery import CONFIRM_TIMEOUT
from octohub_sync.hub import LocalHub, messages
from octohub_sync._execution.task_control import current_task

from .conftest import KEY, Gate, connected, wait_until
from .proxy import StallProxy


def arrived_on_connection(hub: LocalHub, pc_id: str, task_id: str) -> list[int]:
    """For each task_result of ``task_id``: the number of node_ready frames of ``pc_id`` received before it."""
    readies, found = 0, []
    for message in list(hub.received):
        if message.get("_pc_id") != pc_id:
            continue
        if messages.kind_of(message) == "node_ready":
            readies += 1
        elif messages.kind_of(message) == "task_result" and message.get("task_id") == task_id:
            found.append(readies)
    return found


def test_a_task_sent_while_the_node_closes_runs_and_is_answered_once_on_the_next_connection(make_node) -> None:
    # No redelivery: only the node itself can bring the answer. Without the fix the result was written
    # after the node's close frame (the hub reads nothing after it), then confirmed by the clean close.
    with LocalHub(KEY, redeliver=False) as hub:
        client = connected(make_node, hub, {})
        # The hub answers the close frame a little later, as over a slow link: the result is ready by then.
        tid = hub.send_task_at_close("echo", {"during": "the close"}, pc_id=client.pc_id, answer_after=0.3)
        hub.send_message(messages.replaced(hub.dialect), client.pc_id)  # the node closes the connection itself
        result = hub.wait_result(tid, 10)
        assert result["status"] == "completed" and result["result"]["echo"] == {"during": "the close"}
        assert hub.connections[0]["close_code"] == 1000  # it was the node's close handshake
        assert hub.wait_for(lambda: len(hub.connections) == 2, 5)
        assert not hub.wait_for(lambda: len(hub.results[tid]) > 1, 0.5)
        assert arrived_on_connection(hub, client.pc_id, tid) == [2]  # once, after the second node_ready
        assert client.stats()["tasks_completed"] == 1 and client.stats()["results_resent"] == 0


def test_a_task_sent_while_the_node_stops_is_refused_after_the_next_start_with_the_ledger(make_node, tmp_path,
                                                                                          caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    with LocalHub(KEY, redeliver=False) as hub:
        opts: dict[str, Any] = dict(pc_id="node_ledgered", state_dir=str(tmp_path))
        first = connected(make_node, hub, {}, **opts)
        tid = hub.send_task_at_close("echo", pc_id=first.pc_id, answer_after=0.3)
        # The refusal could not be sent: it waits in the ledger; it carries no work, so the stop was clean.
        assert first.stop(timeout=5) is True
        assert any("1 NodeShuttingDown answer(s) to tasks that never ran could not go out before the connection "
                   "closed: the ledger sends the answers after the next start's node_ready" in r.getMessage()
                   for r in caplog.records)
        assert not any("not sent" in r.getMessage() for r in caplog.records)
        assert tid not in hub.results
        connected(make_node, hub, {}, **opts)
        result = hub.wait_result(tid, 10)
        assert result["status"] == "failed" and result["error"].startswith("NodeShuttingDown")
        assert not hub.wait_for(lambda: len(hub.results[tid]) > 1, 0.5)
        assert arrived_on_connection(hub, "node_ledgered", tid) == [2]


def test_a_refusal_that_cannot_go_out_at_the_stop_does_not_make_the_stop_unclean(make_node, caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    with LocalHub(KEY, redeliver=False) as hub:
        node = connected(make_node, hub, {})  # no ledger
        held, release = threading.Event(), threading.Event()
        node.register_task_handler("hold", lambda task: (held.set(), release.wait(10))[1])
        work = hub.send_task("hold", pc_id=node.pc_id)
        assert held.wait(10)
        tid = hub.send_task_at_close("echo", pc_id=node.pc_id, answer_after=0.3)
        release.set()
        assert node.stop(timeout=5) is True  # the work's result went out; the late refusal carries none
        assert hub.wait_result(work)["result"] is True and tid not in hub.results
        assert any("1 NodeShuttingDown answer(s) to tasks that never ran could not go out before the connection "
                   "closed: not answered (the hub's own time limit covers them)" in r.getMessage()
                   for r in caplog.records)
        assert not any("not sent" in r.getMessage() for r in caplog.records)


def test_a_skipped_confirmation_pong_is_asked_for_again(node, hub: LocalHub) -> None:
    hub.skip_pongs(1, pc_id=node.pc_id)  # the first confirmation ping gets no pong
    assert hub.wait_result(hub.send_task("echo"))["status"] == "completed"
    # Without a deadline the node waited for that pong for ever, and confirmed nothing more on this connection.
    assert wait_until(lambda: node.stats()["results_unconfirmed"] == 0, CONFIRM_TIMEOUT + 3), node.stats()
    assert hub.wait_result(hub.send_task("echo"))["status"] == "completed"
    assert wait_until(lambda: node.stats()["results_unconfirmed"] == 0, 3), node.stats()
    assert len(hub.connections) == 1 and node.stats()["results_resent"] == 0


def test_no_more_results_than_the_outbox_holds_wait_for_confirmation(make_node, hub: LocalHub) -> None:
    client = connected(make_node, hub, {}, outbox_size=3)
    hub.skip_pongs(10_000, pc_id=client.pc_id)  # no confirmation comes back
    ids = [hub.send_task("echo", {"n": n}) for n in range(6)]
    assert hub.wait_for(lambda: len(hub.results) == 3, 5)
    # Three unconfirmed results would all fit back into the outbox of 3 if the path died now.
    assert wait_until(lambda: client.stats()["tasks_completed"] == 6, 5)
    assert not hub.wait_for(lambda: len(hub.results) > 3, 0.5)
    stats = client.stats()
    assert (stats["results_unconfirmed"], stats["outbox"], stats["results_dropped"]) == (3, 3, 0)
    hub.skip_pongs(0, pc_id=client.pc_id)  # the next confirmation ping (asked again) is answered
    assert hub.wait_for(lambda: all(t in hub.results for t in ids), CONFIRM_TIMEOUT + 3)
    assert wait_until(lambda: client.stats()["results_unconfirmed"] == 0, 3)
    assert all(len(hub.results[t]) == 1 for t in ids) and len(hub.connections) == 1


def test_stop_does_not_wait_for_a_task_answered_at_its_time_limit_and_says_it_still_runs(make_node, hub: LocalHub,
                                                                                         caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    gate = Gate()
    client = connected(make_node, hub, {"block": gate.handler("late")})
    try:
        tid = hub.send_task("block", timeout=0.5)
        assert gate.started.wait(10)
        started = time.monotonic()
        assert client.stop(timeout=3) is False  # its handler did not finish
        assert time.monotonic() - started < 2.5  # the drain ended at the time limit, not after its 3 s
        assert hub.wait_result(tid)["error"] == "TaskTimeout: timed out after 0.5 s"
        assert any("1 handler(s) still running past their time limit" in r.getMessage() and tid in r.getMessage()
                   for r in caplog.records)
    finally:
        gate.release.set()


def test_the_liveness_loops_tick_while_a_send_is_stalled(make_node) -> None:
    """A write into a stalled path blocks for OCTOHUB_CONNECT_TIMEOUT; the loops whose ticks make the
    node alive (timers: progress; watchdog: its close frame) must not block with it."""
    with LocalHub(KEY, max_size=64 * 2**20) as hub:
        proxy = StallProxy(hub.ws_port)
        try:
            release, chatting, quiet = threading.Event(), threading.Event(), threading.Event()

            def chatty(task: dict) -> str:
                while not quiet.is_set():  # progress all along: the timers have some to send
                    current_task().progress(0.5)
                    chatting.set()
                    quiet.wait(0.05)
                return "done"

            client = make_node(_hub=hub, _start=False, connect_mode="direct", ws_port=proxy.port, ping_interval=30,
                               ping_timeout=20, connect_timeout=4.0, max_result_bytes=0, progress_interval=0.1)
            client.register_task_handler("big", lambda task: (release.wait(10), "x" * (24 * 2**20))[1])
            client.register_task_handler("chatty", chatty)
            client.start()
            assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
            hub.send_task("chatty")
            assert chatting.wait(10)
            hub.send_task("big")
            assert wait_until(lambda: client.stats()["tasks_running"] == 2, 10)
            proxy.stall()
            release.set()  # the big result blocks its worker in the socket's send
            assert wait_until(lambda: client.stats()["tasks_completed"] == 1, 10)
            client._node.watchdog.replaced()  # type: ignore[union-attr]  # the watchdog begins a close
            oldest, deadline = 0.0, time.monotonic() + 2.5
            while time.monotonic() < deadline:
                oldest = max(oldest, *client._node.beats.ages(time.monotonic()).values())
                threading.Event().wait(0.05)
            assert oldest < 1.0, oldest  # both loops tick every 0.25 s
            assert client.liveness().ok
        finally:
            quiet.set()
            proxy.close()


def test_a_reconnect_during_the_drain_leaves_the_node_stopping(make_node, hub: LocalHub) -> None:
    gate = Gate()
    client = connected(make_node, hub, {"block": gate.handler("done")})
    tid = hub.send_task("block")
    assert gate.started.wait(10)
    stopper = threading.Thread(target=client.stop, kwargs={"timeout": 10}, name="test-stopper")
    stopper.start()
    try:
        assert wait_until(lambda: client.stats()["state"] == "stopping", 5)
        hub.drop(client.pc_id)  # the watchdog reconnects while the drain waits for the task
        assert hub.wait_for(lambda: len(hub.connections) == 2 and hub.connected(client.pc_id)
                            and all(s.ready for s in hub.sessions(client.pc_id)), 10)
        assert client.stats()["state"] == "stopping"
    finally:
        gate.release.set()
        stopper.join(15)
    assert not stopper.is_alive()
    assert hub.wait_result(tid)["result"] == "done"
    assert client.stats()["state"] == "stopped"
