"""Link and outbox: results produced while disconnected wait in the bounded outbox and follow node_ready."""
from __future__ import annotations

import logging

from octohub_sync.hub import LocalHub

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
