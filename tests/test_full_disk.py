"""A full disk never loses results: only real damage moves a ledger aside, and what was moved aside is found.

The disk is a real small tmpfs mounted for the test (CI runs as root; elsewhere those tests skip, saying so).
"""
from __future__ import annotations

import errno
import logging
import os
import re
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Iterator

import pytest

from octohub_sync._wire import protocol
from octohub_sync.exceptions import LedgerUnavailable
from octohub_sync.hub import LocalHub
from octohub_sync._delivery.ledger import Ledger
from octohub_sync._delivery.ledger_file import is_corrupt
from octohub_sync._ops.stats import Stats

from .conftest import wait_until
from .test_ledger import rows
from .test_process import finish, spawn

pytestmark = pytest.mark.timeout(60)

needs_root = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                                reason="mounting a tmpfs needs root (CI runs as root)")

IDS = ("kept-1", "kept-2", "kept-3")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; return it (delete it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def unsent(state: Path, pc_id: str) -> None:
    """A ledger holding three results the hub never confirmed (a node stopped while the hub was away)."""
    ledger = Ledger(str(state), pc_id, cache_size=10, stats=Stats(),
                    log=logging.LoggerAdapter(logging.getLogger("t"), {}))
    ledger.open()
    for tid in IDS:
        ledger.add_result(tid, protocol.task_completed(tid, f"result of {tid}"), lambda results: None, finished=True)
    ledger.settle()
    ledger.close()


def aside(state: Path) -> list[str]:
    return [p.name for p in state.iterdir() if ".corrupt-" in p.name]


@needs_root
def test_a_full_disk_at_start_leaves_the_ledger_and_the_next_start_sends_it(make_node, hub: LocalHub, disk: Path,
                                                                            tmp_path: Path) -> None:
    state = disk / "state"
    unsent(state, "node_full")
    filler = fill(disk)
    node = make_node(_start=False, pc_id="node_full", state_dir=str(state))
    with pytest.raises(LedgerUnavailable) as refused:
        node.start()
    text = str(refused.value)
    assert f"{state / 'node_full.sqlite3'}" in text and f"OCTOHUB_STATE_DIR='{state}'" in text and "left as it is" in text
    assert aside(state) == []
    # The program says so in one line and exits 1: a service manager starts it again later.
    code, err = finish(spawn(hub, tmp_path, "node_full", OCTOHUB_STATE_DIR=str(state)))
    assert code == 1 and "cannot be opened now" in err and "Traceback" not in err, err[-2000:]
    assert aside(state) == []
    filler.unlink()  # the space comes back
    assert rows(state / "node_full.sqlite3", "results") == 3
    node = make_node(pc_id="node_full", state_dir=str(state))
    assert node.wait_connected(10)
    assert [hub.wait_result(tid)["result"] for tid in IDS] == [f"result of {tid}" for tid in IDS]


@needs_root
def test_the_disk_filling_up_while_running_keeps_results_in_memory(make_node, hub: LocalHub, disk: Path,
                                                                   caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    state = disk / "state"
    node = make_node(pc_id="node_fills", state_dir=str(state))
    assert node.wait_connected(10)
    assert hub.wait_result(hub.send_task("echo", {"n": -1}))["status"] == "completed"
    filler = fill(disk)
    ids = [hub.send_task("echo", {"pad": "x" * 5000, "n": n}) for n in range(40)]
    assert all(hub.wait_result(t, 15)["status"] == "completed" for t in ids)
    assert node.stats()["ledger_errors"] >= 1 and node.is_connected()
    said = [r for r in caplog.records if "writing the ledger" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno >= logging.WARNING
    assert "kept in memory" in said[0].getMessage() and str(state / "node_fills.sqlite3") in said[0].getMessage()
    filler.unlink()
    assert hub.wait_result(hub.send_task("echo", {"n": 99}))["status"] == "completed"
    assert wait_until(lambda: any("works again;" in r.getMessage() for r in caplog.records), 5)
    again = next(r.getMessage() for r in caplog.records if "works again;" in r.getMessage())
    counted = re.search(r"works again; (\d+) result\(s\) produced while it failed", again)
    assert counted and 1 <= int(counted.group(1)) <= 40
    assert node.stop(5) is True


def test_a_ledger_an_older_version_moved_aside_is_found_and_sent(make_node, hub: LocalHub, tmp_path: Path,
                                                                 caplog) -> None:
    caplog.set_level(logging.WARNING, logger="octohub_sync")
    state = tmp_path / "state"
    unsent(state, "node_moved")
    # What the older version did on any SQLite error (a full disk among them): renamed it, with its -wal.
    old = state / "node_moved.sqlite3.corrupt-20250101T000000"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{state / 'node_moved.sqlite3'}{suffix}").exists():
            Path(f"{state / 'node_moved.sqlite3'}{suffix}").rename(f"{old}{suffix}")
    damaged = state / "node_moved.sqlite3.corrupt-20250102T000000"
    damaged.write_bytes(b"not a database" * 100)  # really damaged: left for a post-mortem
    node = make_node(pc_id="node_moved", state_dir=str(state))
    assert node.wait_connected(10)
    assert [hub.wait_result(tid)["result"] for tid in IDS] == [f"result of {tid}" for tid in IDS]
    assert aside(state) == [damaged.name] and damaged.read_bytes() == b"not a database" * 100
    assert any(old.name in r.getMessage() and "3 unsent result(s)" in r.getMessage() for r in caplog.records)
    # Taken over once: a restart sends nothing again, and finds nothing more to take.
    assert wait_until(lambda: rows(state / "node_moved.sqlite3", "results") == 0, 10)
    node.stop(5)
    again = make_node(pc_id="node_moved", state_dir=str(state))
    assert again.wait_connected(10)
    assert all(len(hub.results[tid]) == 1 for tid in IDS)


def test_only_damage_counts_as_corrupt_on_every_python() -> None:
    # Raised by SQLite itself (Python 3.11+ carries the code): a full disk, damage.
    with closing(sqlite3.connect(":memory:")) as db:
        db.execute("PRAGMA max_page_count = 1")
        with pytest.raises(sqlite3.Error) as full:
            db.execute("CREATE TABLE t (x)")
    assert not is_corrupt(full.value)
    # Built by hand, as Python 3.9 and 3.10 raise them: no code, only the message.
    for message, damaged in (("database or disk is full", False), ("database is locked", False),
                             ("unable to open database file", False), ("disk I/O error", False),
                             ("database disk image is malformed", True), ("file is not a database", True)):
        exc = sqlite3.DatabaseError(message)
        assert getattr(exc, "sqlite_errorcode", None) is None
        assert is_corrupt(exc) is damaged, message
