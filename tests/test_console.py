"""Consoles whose code page cannot show the text: the node and the standalone hub as real processes.

Each process runs with ``PYTHONIOENCODING`` set (and UTF-8 mode off), as on a Windows machine
whose output goes to a pipe or a service log in the ANSI code page (cp1252, cp936) or on a
7-bit terminal (ascii): what the encoding cannot show is escaped (``\\u4f60``), what it can is
written verbatim, and nothing raises.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from octohub_sync.client import NodeWebSocketClient
from octohub_sync.hub import LocalHub

from .conftest import KEY, wait_until

ROOT = Path(__file__).resolve().parent.parent

#: encoding -> can it show Chinese?
ENCODINGS = {"cp1252": False, "ascii": False, "cp936": True, "utf-8": True}


def escaped(text: str) -> str:
    """``text`` as ``backslashreplace`` writes it in an encoding without Chinese."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def console_env(encoding: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCTOHUB_", "PYTHON"))}
    env.update(PYTHONIOENCODING=encoding, PYTHONUTF8="0", **extra)
    return env


def stop(proc: subprocess.Popen, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"process did not exit within {timeout} s after {signal.Signals(signum).name}")


def assert_no_encoding_error(err: str) -> None:
    assert "Logging error" not in err and "UnicodeEncodeError" not in err, err[-3000:]
    # The one traceback allowed is the failing handler's, right below its "failed" line (docs/observability.md).
    lines = err.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            assert i and " failed: " in lines[i - 1], err[-3000:]


def assert_shown(text: str, output: str, encoding: str) -> None:
    """Verbatim where ``encoding`` shows Chinese, escaped where it does not."""
    expected = text if ENCODINGS[encoding] else escaped(text)
    assert expected in output, output[-3000:]


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_node_logs_and_answers_chinese_on_any_console(hub: LocalHub, tmp_path: Path, encoding: str) -> None:
    env = console_env(encoding, OCTOHUB_SIGNATURE_KEY=KEY, OCTOHUB_STATE_DIR="off", OCTOHUB_LOG_LEVEL="INFO")
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "octohub_sync", "--app", "tests.console_app", "--env-file", os.devnull,
             "--server-host", "127.0.0.1", "--server-port", str(hub.api_port), "--pc-id", "node_console"],
            cwd=ROOT, env=env, stdout=out, stderr=err)
    try:
        assert hub.wait_connected("node_console", timeout=20), err_path.read_bytes()[-3000:]
        done = hub.wait_result(hub.send_task("汉字任务", {"text": "你好"}, pc_id="node_console"), timeout=10)
        failed = hub.wait_result(hub.send_task("失败任务", {"text": "世界"}, pc_id="node_console"), timeout=10)
        assert proc.poll() is None  # still serving
    finally:
        code = stop(proc)
    # The handler's print() to stdout did not fail the task, and the hub got the Chinese unchanged.
    assert done["status"] == "completed" and done["result"] == {"结果": "你好完成"}, done
    assert failed["status"] == "failed" and failed["error"] == "ValueError: 出错了 世界"
    assert code == 0
    err_text = err_path.read_bytes().decode(encoding)
    assert_no_encoding_error(err_text)
    # The handler's log line, with its task id (docs/observability.md#the-task-on-every-log-line).
    assert_shown(f"console_app - WARNING - [{done['task_id']}] 处理任务 你好", err_text, encoding)
    assert_shown("(失败任务) failed: ValueError: 出错了 世界", err_text, encoding)  # the node's own
    assert_shown("serving tests.console_app: 汉字任务, 失败任务", err_text, encoding)
    assert_shown("打印 你好", out_path.read_bytes().decode(encoding), encoding)


@pytest.mark.parametrize("encoding", ["cp1252", "ascii", "cp936"])
def test_standalone_hub_prints_chinese_results_and_stops_on_sigterm(
        make_node: Callable[..., NodeWebSocketClient], tmp_path: Path, encoding: str) -> None:
    out_path, err_path = tmp_path / "hub.out", tmp_path / "hub.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        hub = subprocess.Popen([sys.executable, "-m", "octohub_sync.hub", "--api-port", "0", "--ws-port", "0",
                                "--echo-every", "0.2", "--key", KEY],
                               cwd=tmp_path, env=console_env(encoding), stdout=out, stderr=err)
    try:
        assert wait_until(lambda: b"--server-port" in out_path.read_bytes(), 20), err_path.read_bytes()
        words = out_path.read_bytes().decode(encoding).split()
        port = int(words[words.index("--server-port") + 1])
        node = make_node(server_port=port, signature_key=KEY, pc_id="node_echo", _start=False)
        node.register_task_handler("echo", lambda task: {"回声": "你好"})
        node.start()
        assert wait_until(lambda: out_path.read_bytes().count(b"result:") >= 2, 20), err_path.read_bytes()
        assert hub.poll() is None, err_path.read_bytes()  # it used to die here with UnicodeEncodeError
        node.stop(timeout=5)
    finally:
        code = stop(hub)
    out_text = out_path.read_bytes().decode(encoding)
    assert code == 0
    assert_shown('"result": {"回声": "你好"}', out_text, encoding)
    assert out_text.rstrip().splitlines()[-1] == "local hub stopped on SIGTERM"
    assert_no_encoding_error(err_path.read_bytes().decode(encoding))
