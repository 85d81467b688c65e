"""The task on every log record, by any logger, on the worker thread and in isolated children (_execution/log_context.py)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from typing import Any, Iterator

import pytest

from octohub_sync.hub import LocalHub
from octohub_sync._ops.log_format import JsonFormatter, TextFormatter

from . import middleware_handlers as mw

pytestmark = pytest.mark.timeout(60)


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def kept() -> Iterator[Keep]:
    keep = Keep()
    user = logging.getLogger("user.tasks")
    user.addHandler(keep)
    old = user.level
    user.setLevel(logging.INFO)
    try:
        yield keep
    finally:
        user.removeHandler(keep)
        user.setLevel(old)


@pytest.mark.parametrize("isolation", [None, "process"])
def test_a_handlers_own_logger_gets_the_task_fields(make_node, hub: LocalHub, kept: Keep, isolation: Any) -> None:
    client = make_node(_start=False)
    client.register_task_handler("log", mw.logs, isolation=isolation, key="account", concurrency=2)
    client.start()
    assert client.wait_connected(10) and hub.wait_connected(client.pc_id, 10)
    tid = hub.send_task("log", {"what": "the inbox", "account": "acc-7"})
    result = hub.wait_result(tid, timeout=30)
    assert result["status"] == "completed", result
    mine = [r for r in kept.records if r.getMessage() == "working on the inbox"]
    assert len(mine) == 1, [r.getMessage() for r in kept.records]
    record = mine[0]
    assert (record.task_id, record.task_type, record.task_key) == (tid, "log", "acc-7")
    # An isolated child's record reaches the node's logger, made in the child.
    assert record.process == (result["result"]["pid"] if isolation else os.getpid())
    if isolation:
        assert result["result"]["pid"] != os.getpid()


def test_records_outside_a_task_have_harmless_defaults(node) -> None:
    record = logging.getLogger("user.tasks").makeRecord("user.tasks", logging.INFO, __file__, 1, "hi", (), None)
    assert (record.task_id, record.task_type, record.task_key) == ("-", "-", "-")
    line = logging.Formatter("%(task_id)s %(task_key)s %(message)s").format(record)
    assert line == "- - hi"  # a user's format with the fields never fails outside a task


def test_text_format_shows_the_task_id_and_json_is_one_object_per_line() -> None:
    record = logging.makeLogRecord({"name": "user.tasks", "levelno": logging.WARNING, "levelname": "WARNING",
                                    "msg": "working", "task_id": "t-1", "task_type": "post", "task_key": "-"})
    assert TextFormatter().format(record).endswith(" - user.tasks - WARNING - [t-1] working")
    outside = logging.makeLogRecord({"name": "x", "msg": "idle", "task_id": "-"})
    assert TextFormatter().format(outside).endswith(" - idle")
    line = json.loads(JsonFormatter(pc_id="pc-1").format(record))
    assert line["message"] == "working" and line["level"] == "WARNING" and line["logger"] == "user.tasks"
    assert (line["pc_id"], line["task_id"], line["task_type"], line["task_key"]) == ("pc-1", "t-1", "post", None)
    assert "time" in line


def test_the_program_writes_json_lines_with_the_task(tmp_path, hub: LocalHub) -> None:
    """octohub-node --log-format json: every line one object; a failed task's line has its id and traceback."""
    app = tmp_path / "jsonapp.py"
    app.write_text(textwrap.dedent("""
        import logging
        from octohub_sync import Handlers
        handlers = Handlers()

        @handlers.task("boom")
        def boom(task):
            logging.getLogger("user.app").warning("about to fail")
            raise ValueError("nope")
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()]),
           "OCTOHUB_SIGNATURE_KEY": hub.key, "OCTOHUB_STATE_DIR": "off"}
    log = tmp_path / "node.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "octohub_sync", "--app", "jsonapp", "--log-format", "json",
                                 "--env-file", os.devnull, "--server-host", "127.0.0.1", "--server-port",
                                 str(hub.api_port), "--pc-id", "node_json"],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        assert hub.wait_connected("node_json", timeout=30), log.read_text()
        tid = hub.send_task("boom")
        assert hub.wait_result(tid, timeout=20)["status"] == "failed"
    finally:
        proc.terminate()
        proc.wait(20)
    err = log.read_text()
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines and all(line["pc_id"] for line in lines)
    user = [line for line in lines if line["logger"] == "user.app"]
    assert user and user[0]["task_id"] == tid and user[0]["task_type"] == "boom", user
    failed = [line for line in lines if "failed" in line["message"] and line["task_id"] == tid]
    assert failed and "ValueError: nope" in failed[0]["exception"], lines
    assert hub.key not in err
