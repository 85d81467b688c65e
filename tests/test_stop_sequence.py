"""stop()'s order is one sequence (_node/stop_sequence.py): a real stop runs exactly its steps, in its
order; docs/architecture.md shows the same order; a step missing or unknown is a bug that fails loudly."""
from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import pytest

from octohub_sync._node import stop_sequence
from octohub_sync.hub import LocalHub
from octohub_sync._node.stop_sequence import STOP_SEQUENCE

from .conftest import connected

ARCHITECTURE = Path(__file__).resolve().parent.parent / "docs" / "architecture.md"
LOG = logging.LoggerAdapter(logging.getLogger("octohub_sync.test"), {})


def test_a_stop_runs_the_documented_steps_in_order(make_node, hub: LocalHub, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="octohub_sync")
    began, release = threading.Event(), threading.Event()

    def slow(task: dict) -> str:
        began.set()
        release.wait(10)
        return "done during the drain"

    client = connected(make_node, hub, {"slow": slow})
    tid = hub.send_task("slow", {}, pc_id=client.pc_id)
    assert began.wait(10)
    stopping = threading.Thread(target=client.stop, kwargs={"timeout": 10})
    stopping.start()
    release.set()  # the handler ends during the drain: its result must still reach the hub
    stopping.join(20)
    assert not stopping.is_alive()
    steps = [record.getMessage().split("] stop: ", 1)[1] for record in caplog.records
             if "] stop: " in record.getMessage()]
    assert steps == [step.name for step in STOP_SEQUENCE]
    # What the order is for: the result went out before the close handshake, which completed.
    assert hub.wait_result(tid, 5)["result"] == "done during the drain"
    assert hub.wait_for(lambda: hub.connections[-1]["close_code"] == 1000, 5), hub.connections


def test_a_step_missing_or_unknown_fails_before_anything_runs() -> None:
    ran: list[str] = []
    steps = {step.name: (lambda name=step.name: ran.append(name)) for step in STOP_SEQUENCE}
    stop_sequence.run(steps, LOG)
    assert ran == [step.name for step in STOP_SEQUENCE]
    ran.clear()
    with pytest.raises(KeyError, match="not in STOP_SEQUENCE"):
        stop_sequence.run({**steps, "an extra step": lambda: None}, LOG)
    assert ran == []
    del steps["drain"]
    with pytest.raises(KeyError):
        stop_sequence.run(steps, LOG)


def test_every_step_says_why_and_the_architecture_page_shows_the_same_order() -> None:
    assert all(step.why for step in STOP_SEQUENCE)
    assert len({step.name for step in STOP_SEQUENCE}) == len(STOP_SEQUENCE)
    section = ARCHITECTURE.read_text(encoding="utf-8").split("## The order of a stop", 1)[1].split("\n#", 1)[0]
    listed = re.findall(r"^\d+\. \*\*(.+?)\*\*", section, flags=re.MULTILINE)
    assert listed == [step.name for step in STOP_SEQUENCE]
