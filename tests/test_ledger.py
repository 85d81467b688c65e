"""What survives a restart: the on-disk ledger (OCTOHUB_STATE_DIR), with real kill -9 crashes."""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import stat
import threading
from collections import defaultdict
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

import pytest

from octohub_sync import ConfigError
from octohub_sync.hub import LocalHub
from octohub_sync._delivery.ledger import TRIM_EVERY, Ledger, default_state_dir
from octohub_sync._ops.stats import Stats

from .conftest import KEY, wait_until
from .test_process import finish, log_text, spawn


def rows(db_file: Path, table: str) -> int:
    """Rows of a ledger table, read the way any other process would read it."""
    # closing(): "with connection" only ends a transaction; the connection stays open (ResourceWarning).
    with closing(sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=5)) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def kill(proc: Any) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


# -- in one process ---------------------------------------------------------------------------


def test_results_wait_on_disk_across_a_stop_and_arrive_once(make_node, state: Path) -> None:
    with LocalHub(KEY, redeliver=False) as hub:
        release = threading.Event()
        first = make_node(_hub=hub, _start=False, pc_id="node_keep", state_dir=str(state))
        first.register_task_handler("slow", lambda task: (release.wait(10), task["task_id"])[1])
        first.start()
        assert first.wait_connected(10)
        ids = [hub.send_task("slow") for _ in range(3)]
        assert wait_until(lambda: first.stats()["tasks_running"] == 3, 10)
        hub.stop_ws()
        assert wait_until(lambda: not first.is_connected(), 10)
        release.set()
        assert wait_until(lambda: first.stats()["outbox"] == 3, 10)
        assert first.stop(5) is False  # unsent: the hub is down
        assert rows(state / "node_keep.sqlite3", "results") == 3
        second = make_node(_hub=hub, pc_id="node_keep", state_dir=str(state))
        hub.start_ws()
        assert second.wait_connected(10)
        assert [hub.wait_result(t)["result"] for t in ids] == ids
        assert wait_until(lambda: rows(state / "node_keep.sqlite3", "results") == 0, 10)  # confirmed, forgotten
        assert all(len(hub.results[t]) == 1 for t in ids)


def test_finished_task_redelivered_after_restart_is_answered_from_the_ledger(make_node, hub: LocalHub,
                                                                            state: Path) -> None:
    runs: list[str] = []
    for attempt in range(2):
        client = make_node(_start=False, pc_id="node_again", state_dir=str(state))
        client.register_task_handler("count", lambda task: (runs.append(task["task_id"]), len(runs))[1])
        client.start()
        assert client.wait_connected(10)
        hub.send_task("count", task_id="t-1")
        assert hub.wait_for(lambda: len(hub.results.get("t-1", [])) == attempt + 1, 10)
        assert client.stop(5)
    assert runs == ["t-1"]
    assert hub.results["t-1"][0] == hub.results["t-1"][1]


def test_interrupted_task_runs_again_or_is_answered_interrupted(make_node, hub: LocalHub, state: Path,
                                                               caplog) -> None:
    caplog.set_level(logging.INFO, logger="octohub_sync")
    # What a process killed while two tasks ran leaves behind.
    ledger = Ledger(str(state), "node_int", cache_size=10, stats=Stats(),
                    log=logging.LoggerAdapter(logging.getLogger("t"), {}))
    ledger.open()
    ledger.started("retry-me", wait=True)
    ledger.started("never-twice", wait=True)
    ledger.close()
    client = make_node(_start=False, pc_id="node_int", state_dir=str(state))
    ran: list[str] = []
    client.register_task_handler("work", lambda task: ran.append(task["task_id"]) or "done")
    client.register_task_handler("charge", lambda task: ran.append(task["task_id"]) or "charged",
                                 retry_interrupted=False)
    client.start()
    assert client.wait_connected(10)
    assert hub.wait_result(hub.send_task("work", task_id="retry-me"))["result"] == "done"
    once = hub.wait_result(hub.send_task("charge", task_id="never-twice"))
    assert once["status"] == "failed" and once["error"].startswith("TaskInterrupted: ")
    assert ran == ["retry-me"]
    # Asked again, the interrupted answer stands (it is a finished task now).
    hub.send_task("charge", task_id="never-twice")
    assert hub.wait_for(lambda: len(hub.results["never-twice"]) == 2, 10)
    assert hub.results["never-twice"][1]["error"] == once["error"] and ran == ["retry-me"]
    assert any("running it again (at-least-once)" in r.getMessage() for r in caplog.records)


def test_results_are_handed_on_after_their_commit_and_no_worker_waits_for_the_disk(state: Path) -> None:
    ledger = Ledger(str(state), "node_order", cache_size=10, stats=Stats(),
                    log=logging.LoggerAdapter(logging.getLogger("t"), {}))
    ledger.open()
    db_file = state / "node_order.sqlite3"
    handed: list[tuple[int, int]] = []
    arrived = threading.Event()

    def then(results) -> None:  # what delivery does next: send them; here, look at the disk first
        on_disk = rows(db_file, "results")
        handed.extend((result.seq, on_disk) for result in results)
        if len(handed) == 3:
            arrived.set()

    try:
        with closing(sqlite3.connect(str(db_file), timeout=5, isolation_level=None)) as blocker:
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file: no commit can happen now
            for n in range(3):
                ledger.add_result(f"t-{n}", f"frame {n}", then, finished=True)  # returns at once all the same
            assert handed == []
            blocker.execute("ROLLBACK")
        assert arrived.wait(10)
        # Oldest first, each on disk (with everything added before it) when it was handed on.
        assert [seq for seq, _ in handed] == sorted(seq for seq, _ in handed)
        assert all(on_disk > i for i, (_, on_disk) in enumerate(handed))
    finally:
        ledger.close()


def test_a_task_that_starts_and_ends_within_one_transaction_writes_no_started_row(state: Path) -> None:
    ledger = Ledger(str(state), "node_brief", cache_size=10, stats=Stats(),
                    log=logging.LoggerAdapter(logging.getLogger("t"), {}))
    ledger.open()
    db_file = state / "node_brief.sqlite3"
    statements: list[str] = []
    assert ledger._db is not None
    ledger._db.set_trace_callback(statements.append)  # set before any write: the writer thread runs them
    handed = threading.Event()
    try:
        ledger.started("long", wait=True)  # written at once: its own transaction
        with closing(sqlite3.connect(str(db_file), timeout=5, isolation_level=None)) as blocker:
            blocker.execute("BEGIN IMMEDIATE")  # no commit now
            # The writer takes this one and waits for the file (or has not taken it yet): either way
            # "brief" starts and ends in one batch, whatever the timing, and then in one transaction.
            ledger.add_result("first", "frame first", lambda results: None, finished=True)
            ledger.started("brief")
            ledger.add_result("brief", "frame brief", lambda results: None, finished=True)
            ledger.add_result("long", "frame long", lambda results: handed.set(), finished=True)
            blocker.execute("ROLLBACK")
        assert handed.wait(10)
    finally:
        ledger.close()
    inserts = [sql for sql in statements if sql.startswith("INSERT INTO started")]
    deletes = [sql for sql in statements if sql.startswith("DELETE FROM started")]
    assert len(inserts) == 1 and "'long'" in inserts[0]  # "brief" never had a row to add...
    assert any("'long'" in sql for sql in deletes) and not any("'brief'" in sql for sql in deletes)  # ...or remove
    assert rows(db_file, "started") == 0 and rows(db_file, "finished") == 3 and rows(db_file, "results") == 3


def test_files_are_private_and_bounded(make_node, hub: LocalHub, state: Path) -> None:
    client = make_node(pc_id="node_small", state_dir=str(state), result_cache_size=20)
    assert client.wait_connected(10)
    ids = [hub.send_task("echo", {"n": n}) for n in range(300)]
    assert [t for t in ids if hub.wait_result(t)["status"] != "completed"] == []
    db_file = state / "node_small.sqlite3"
    # Confirmed results leave the ledger (a loaded machine may take seconds for the last confirmation).
    assert wait_until(lambda: rows(db_file, "results") == 0, 30), (rows(db_file, "results"), client.stats())
    assert rows(db_file, "finished") <= 20 + TRIM_EVERY and rows(db_file, "started") == 0
    for path in state.iterdir():
        if path.name.startswith("node_small"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_corrupt_or_foreign_file_is_moved_aside(make_node, hub: LocalHub, state: Path, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="octohub_sync")
    state.mkdir()
    (state / "node_bad.sqlite3").write_bytes(b"this is not a database" * 100)
    with closing(sqlite3.connect(state / "node_other.sqlite3", isolation_level=None)) as other:
        other.execute("CREATE TABLE accounts (id INTEGER)")
    for pc_id in ("node_bad", "node_other"):
        client = make_node(pc_id=pc_id, state_dir=str(state))
        assert client.wait_connected(10)
        assert hub.wait_result(hub.send_task("echo", pc_id=pc_id))["status"] == "completed"
        aside = [p for p in state.iterdir() if p.name.startswith(f"{pc_id}.sqlite3.corrupt-")]
        assert len(aside) == 1
    kept = next(p for p in state.iterdir() if p.name.startswith("node_bad.sqlite3.corrupt-"))
    assert kept.read_bytes() == b"this is not a database" * 100  # kept for a post-mortem, not deleted
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert sum("cannot be used" in m and "moved it aside" in m for m in messages) == 2


def test_second_node_on_one_ledger_is_refused(make_node, state: Path) -> None:
    first = make_node(pc_id="node_twin", state_dir=str(state))
    assert first.wait_connected(10)
    second = make_node(_start=False, pc_id="node_twin", state_dir=str(state))
    with pytest.raises(ConfigError) as refused:
        second.start()
    text = str(refused.value)
    assert "OCTOHUB_STATE_DIR" in text and "node_twin" in text and "node_twin.sqlite3" in text
    assert "OCTOHUB_INSTANCE" in text
    first.stop(5)
    second.start()  # the lock went with the first node
    assert second.wait_connected(10)


def unwritable_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory this process cannot create files in (root ignores mode bits: use /sys there)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        yield locked
        locked.chmod(0o700)
    else:
        yield Path("/sys/octohub-state")  # sysfs refuses new entries even to root


def test_unwritable_state_dir_names_the_setting(make_node, tmp_path: Path) -> None:
    for directory in unwritable_directory(tmp_path):
        client = make_node(_start=False, pc_id="node_ro", state_dir=str(directory))
        with pytest.raises(ConfigError, match=f"OCTOHUB_STATE_DIR='{directory}'"):
            client.start()


def test_disk_full_at_run_time_keeps_results_in_memory(make_node, hub: LocalHub, state: Path, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="octohub_sync")
    client = make_node(pc_id="node_full", state_dir=str(state))
    assert client.wait_connected(10)
    db = client.store._db  # noqa: SLF001 - make SQLite itself report a full disk (SQLITE_FULL)
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    ids = [hub.send_task("echo", {"pad": "x" * 5000, "n": n}) for n in range(20)]
    assert all(hub.wait_result(t)["status"] == "completed" for t in ids)
    assert client.stats()["ledger_errors"] >= 1
    errors = [r.getMessage() for r in caplog.records if "writing the ledger" in r.getMessage()]
    assert len(errors) == 1 and "full" in errors[0]


def test_state_dir_default_follows_systemd_then_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", os.pathsep.join(["/var/lib/octohub", "/other"]))
    assert default_state_dir(platform="linux") == Path("/var/lib/octohub")
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "octohub-node"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_dir() == Path.home() / ".local" / "state" / "octohub-node"


# -- real crashes ------------------------------------------------------------------------------


def journal_lines(path: Path) -> dict[str, list[tuple[int, str]]]:
    """task_id -> [(pid, "start" | "end"), ...] in the order written."""
    seen: dict[str, list[tuple[int, str]]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            pid, what, task_id = line.split(" ", 2)
            seen[task_id].append((int(pid), what))
    return seen


def test_kill_9_with_the_hub_down_loses_no_result(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with LocalHub(KEY, redeliver=False) as hub:
        first = spawn(hub, tmp_path, "node_crash", log_name="first", OCTOHUB_TEST_JOURNAL=str(journal))
        try:
            assert hub.wait_connected("node_crash", timeout=20)
            ids = [hub.send_task("journal", {"seconds": 0.5}, pc_id="node_crash") for _ in range(5)]
            assert wait_until(lambda: len(journal_lines(journal)) == 5, 10)  # all five running
            hub.stop_ws()  # the results are produced while the hub is unreachable
            db_file = tmp_path / "state" / "node_crash.sqlite3"
            assert wait_until(lambda: db_file.exists() and rows(db_file, "results") == 5, 15), log_text(first)
            kill(first)
        finally:
            first.kill()
        hub.start_ws()
        second = spawn(hub, tmp_path, "node_crash", log_name="second", OCTOHUB_TEST_JOURNAL=str(journal))
        try:
            assert hub.wait_for(lambda: all(t in hub.results for t in ids), 20), log_text(second)
            # Redelivered after the restart, a finished task gets its stored result, without running.
            hub.send_task("journal", task_id=ids[0], pc_id="node_crash")
            assert hub.wait_for(lambda: len(hub.results[ids[0]]) == 2, 10)
            second.send_signal(signal.SIGTERM)
            code, _ = finish(second)
        finally:
            second.kill()
    assert code == 0
    assert [len(hub.results[t]) for t in ids[1:]] == [1] * 4  # exactly once
    assert hub.results[ids[0]][0] == hub.results[ids[0]][1]
    assert {r["result"]["pid"] for t in ids for r in hub.results[t]} == {first.pid}
    assert all(steps == [(first.pid, "start"), (first.pid, "end")] for steps in journal_lines(journal).values())


def test_kill_9_in_the_middle_of_1000_tasks(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    total, in_flight = 1000, 200
    with LocalHub(KEY) as hub:  # redelivers what has no result after each node_ready, as a real hub would
        def node(name: str) -> Any:
            return spawn(hub, tmp_path, "node_big", "--max-workers", "16", log_name=name,
                         OCTOHUB_TEST_JOURNAL=str(journal))

        def feed(ids: list[str], until: int) -> None:
            while len(ids) < until:
                # Keep about 200 without a result; half the tasks must never run twice.
                if hub.wait_for(lambda: len(ids) - len(hub.results) < in_flight, 10):
                    kind = "journal_once" if len(ids) % 2 else "journal"
                    ids.append(hub.send_task(kind, {"seconds": 0.01}, pc_id="node_big"))

        first = node("first")
        ids: list[str] = []
        try:
            assert hub.wait_connected("node_big", timeout=20)
            feed(ids, 500)
            assert hub.wait_for(lambda: len(hub.results) >= 300, 30)
            kill(first)  # in the middle: about 200 sent and not answered
        finally:
            first.kill()
        answered_before = {t for t in hub.results}
        second = node("second")
        try:
            feed(ids, total)
            assert hub.wait_for(lambda: len(hub.results) == total, 60), (len(hub.results), log_text(second)[-2000:])
            second.send_signal(signal.SIGTERM)
            finish(second)
        finally:
            second.kill()
    journal_of = journal_lines(journal)
    interrupted = [t for t in ids if (first.pid, "start") in journal_of[t] and (first.pid, "end") not in journal_of[t]]
    for t in ids:
        result = hub.results[t][0]
        ran_second = (second.pid, "start") in journal_of[t]
        if result["status"] == "completed" and result["result"]["pid"] == first.pid:
            assert not ran_second, t  # a finished task never runs twice
    once = [t for i, t in enumerate(ids) if i % 2]
    for t in once:  # retry_interrupted=False: run at most once, whatever happened
        starts = [step for step in journal_of[t] if step[1] == "start"]
        assert len(starts) <= 1, (t, journal_of[t])
    for t in interrupted:
        first_result = hub.results[t][0]
        if t in once:
            assert first_result["status"] == "failed" and first_result["error"].startswith("TaskInterrupted"), t
        else:
            assert (second.pid, "start") in journal_of[t], t  # at-least-once: it ran again
    assert answered_before and interrupted, "the kill must land while tasks run"
    assert "running it again (at-least-once)" in log_text(second) or not [t for t in interrupted if t not in once]


def test_program_refuses_a_second_process_and_an_unwritable_dir(hub: LocalHub, tmp_path: Path) -> None:
    first = spawn(hub, tmp_path, "node_one", log_name="one")
    try:
        assert hub.wait_connected("node_one", timeout=20)
        second = spawn(hub, tmp_path, "node_one", log_name="two")
        code, err = finish(second)
        assert code == 2, err[-2000:]
        assert "OCTOHUB_STATE_DIR" in err and "node_one" in err and "OCTOHUB_INSTANCE" in err
    finally:
        first.kill()
        first.wait(10)
    for directory in unwritable_directory(tmp_path):
        third = spawn(hub, tmp_path, "node_ro", log_name="ro", OCTOHUB_STATE_DIR=str(directory))
        code, err = finish(third)
        assert code == 2 and f"OCTOHUB_STATE_DIR='{directory}'" in err, err[-2000:]


def test_a_ledger_never_closed_says_so_at_the_next_open(state: Path) -> None:
    """A process killed with its ledger open: the next open sees it (the node then re-registers)."""
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import logging, sys, time; from octohub_sync._delivery.ledger import Ledger; from octohub_sync._ops.stats import Stats\n"
        f"Ledger({str(state)!r}, 'node_dirty', cache_size=10, stats=Stats(), "
        "log=logging.LoggerAdapter(logging.getLogger('t'), {})).open()\n"
        "print('open', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
    finally:
        holder.kill()  # SIGKILL; TerminateProcess on Windows: nothing runs in it after this
        holder.wait(10)

    def reopen() -> bool:
        ledger = Ledger(str(state), "node_dirty", cache_size=10, stats=Stats(),
                        log=logging.LoggerAdapter(logging.getLogger("t"), {}))
        unclean = ledger.open().unclean
        ledger.close()
        return unclean

    assert reopen() is True  # the killed process never closed it
    assert reopen() is False  # the one before closed it
