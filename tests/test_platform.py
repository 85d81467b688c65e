"""Windows and macOS as Linux can check them: a simulated Windows, each platform's state directory,
and the stop requests (signals; Windows' console events, with its names injected)."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path, PureWindowsPath
from typing import Any, Callable, Optional

import platformdirs.windows
import pytest

from octohub_sync.hub import LocalHub
from octohub_sync._delivery.ledger import default_state_dir
from octohub_sync._platform import stop_signals
from octohub_sync._platform.stop_signals import (
    CTRL_BREAK_EVENT, CTRL_C_EVENT, CTRL_CLOSE_EVENT, CTRL_SHUTDOWN_EVENT, GRANT_MARGIN, StopRequests)

from .conftest import wait_until
from .test_process import finish, log_text, spawn

ROOT = Path(__file__).resolve().parent.parent
SIMULATION = ROOT / ".ci" / "windows-sim"


def simulated(code: str, **env: str) -> subprocess.CompletedProcess:
    """``python -c code`` in a fresh interpreter under the simulated Windows (not measured by coverage)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OCTOHUB_", "COVERAGE_"))}
    environ.update(PYTHONPATH=os.pathsep.join([str(SIMULATION), str(ROOT)]), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=60)


# -- a simulated Windows ----------------------------------------------------------------------------

def test_every_module_imports_without_the_posix_only_modules() -> None:
    proc = simulated("import runpy; runpy.run_path('.ci/windows-sim/check_imports.py', run_name='__main__')")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "public names: ok" in proc.stdout


def test_the_simulation_hides_what_windows_lacks() -> None:
    proc = simulated("import socket, signal, importlib\n"
                     "for name in ('fcntl', 'termios', 'pwd', 'grp'):\n"
                     "    try:\n        importlib.import_module(name)\n"
                     "    except ImportError:\n        print('hidden', name)\n"
                     "print(hasattr(socket, 'AF_UNIX'), hasattr(signal, 'SIGHUP'))\n"
                     "a, b = socket.socketpair(); a.close(); b.close()")  # the standard library's own still works
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:5] == ["hidden fcntl", "hidden termios", "hidden pwd", "hidden grp", "False False"]


def test_a_ledger_locks_without_fcntl(tmp_path: Path) -> None:
    # The same process twice: filelock, not fcntl, refuses the second (SoftFileLock here, LockFileEx on Windows).
    proc = simulated(
        "import logging, sys\n"
        "from octohub_sync import ConfigError\n"
        "from octohub_sync._delivery.ledger import Ledger\n"
        "from octohub_sync._ops.stats import Stats\n"
        "log = logging.LoggerAdapter(logging.getLogger('t'), {})\n"
        "make = lambda: Ledger(sys.argv[1], 'node_sim', cache_size=10, stats=Stats(), log=log)\n"
        "first = make(); first.open()\n"
        "try:\n    make().open()\nexcept ConfigError as exc:\n    print('refused:', exc)\n"
        "first.close(); again = make(); again.open(); again.close(); print('reopened')".replace(
            "sys.argv[1]", repr(str(tmp_path))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: OCTOHUB_STATE_DIR=" in proc.stdout and "another node process with pc_id node_sim" in proc.stdout
    assert proc.stdout.rstrip().endswith("reopened")


# -- where state lives --------------------------------------------------------------------------------

@pytest.fixture
def no_state_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No systemd or XDG variable; a home of our own. Returns the home."""
    for name in ("STATE_DIRECTORY", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_windows_keeps_state_in_local_appdata(no_state_variables: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What Windows answers for its known folders (SHGetKnownFolderPath there), by CSIDL name.
    known = {"CSIDL_LOCAL_APPDATA": r"C:\Users\ana\AppData\Local", "CSIDL_APPDATA": r"C:\Users\ana\AppData\Roaming"}
    monkeypatch.setattr(platformdirs.windows, "get_win_folder", known.__getitem__)
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/octohub-node")  # not systemd's platform: ignored
    # Local, not roaming (the ledger belongs to this PC), and no vendor folder above ours.
    assert PureWindowsPath(default_state_dir(platform="win32")) == PureWindowsPath(r"C:\Users\ana\AppData\Local\octohub-node")


def test_macos_keeps_state_in_application_support(no_state_variables: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/octohub-node")
    assert default_state_dir(platform="darwin") == no_state_variables / "Library" / "Application Support" / "octohub-node"


def test_linux_keeps_state_where_systemd_or_xdg_says(no_state_variables: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_state_dir(platform="linux") == no_state_variables / ".local" / "state" / "octohub-node"
    monkeypatch.setenv("XDG_STATE_HOME", str(no_state_variables / "xdg"))
    assert default_state_dir(platform="linux") == no_state_variables / "xdg" / "octohub-node"
    assert default_state_dir(platform="freebsd14") == no_state_variables / "xdg" / "octohub-node"
    monkeypatch.setenv("STATE_DIRECTORY", os.pathsep.join(["/var/lib/octohub-node", "/var/lib/other"]))
    assert default_state_dir(platform="linux") == Path("/var/lib/octohub-node")
    assert default_state_dir() == Path("/var/lib/octohub-node")  # this machine is that platform


def test_a_plain_run_says_where_it_created_its_ledger(hub: LocalHub, tmp_path: Path) -> None:
    # No OCTOHUB_STATE_DIR: the program's default, $XDG_STATE_HOME/octohub-node here.
    proc = spawn(hub, tmp_path, "node_where", XDG_STATE_HOME=str(tmp_path / "xdg"), OCTOHUB_STATE_DIR="")
    try:
        assert hub.wait_connected("node_where", timeout=20), log_text(proc)
        created = tmp_path / "xdg" / "octohub-node" / "node_where.sqlite3"
        assert created.exists() and f"created the ledger {created}" in log_text(proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)
    proc = spawn(hub, tmp_path, "node_where", log_name="again", XDG_STATE_HOME=str(tmp_path / "xdg"),
                 OCTOHUB_STATE_DIR="")
    try:
        assert hub.wait_connected("node_where", timeout=20)
        assert "created the ledger" not in log_text(proc)  # said once, when it was created
    finally:
        proc.send_signal(signal.SIGTERM)
        finish(proc)


# -- stop requests --------------------------------------------------------------------------------------

def test_sigint_drains_as_sigterm_does(hub: LocalHub, tmp_path: Path) -> None:
    proc = spawn(hub, tmp_path, "node_ctrl_c")
    try:
        assert hub.wait_connected("node_ctrl_c", timeout=20)
        started = tmp_path / "started"
        task = hub.send_task("block", {"seconds": 1, "started_file": str(started)}, pc_id="node_ctrl_c")
        assert wait_until(started.exists, 10)
        proc.send_signal(signal.SIGINT)  # Ctrl+C
        code, log = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, log[-2000:]
    assert "received SIGINT: stopping" in log and "node stopped" in log
    assert hub.wait_result(task, timeout=5)["result"] == "unblocked"  # it finished, and its result went out


class FakeSignals(types.SimpleNamespace):
    """A signal module of another platform: its names, and the handlers registered with it."""

    def signal(self, signum: int, handler: Any) -> None:
        self.handlers[signum] = handler


def test_ctrl_break_is_a_stop_signal_where_it_exists() -> None:
    windows = FakeSignals(SIGTERM=15, SIGINT=2, SIGBREAK=21, handlers={})
    stops = StopRequests(exit_now=lambda code: None)
    assert stops.install(signals=windows, platform="test") == ["SIGTERM", "SIGINT", "SIGBREAK"]
    assert set(windows.handlers) == {15, 2, 21} and windows.handlers[21] == stops.on_signal
    linux = FakeSignals(SIGTERM=15, SIGINT=2, handlers={})
    assert StopRequests().install(signals=linux, platform="linux") == ["SIGTERM", "SIGINT"]


def test_a_second_signal_exits_at_once() -> None:
    exits: list[int] = []
    stops = StopRequests(exit_now=exits.append)
    stops.on_signal(int(signal.SIGINT), None)
    assert stops.requested.is_set() and exits == []
    stops.on_signal(int(signal.SIGTERM), None)
    assert exits == [1]


class FakeKernel32:
    """kernel32's SetConsoleCtrlHandler: keeps the handler, as Windows would, to call it later."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.handler: Optional[Any] = None

    def SetConsoleCtrlHandler(self, handler: Any, add: bool) -> int:  # noqa: N802 - Windows' name
        assert add is True
        self.handler = handler
        return int(self.ok)


# The C type of a HandlerRoutine, BOOL (DWORD), with this platform's calling convention (WINFUNCTYPE on Windows).
HANDLER_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_ulong)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def windows_stops(clock: Callable[[], float], exits: list) -> tuple[StopRequests, FakeKernel32]:
    kernel32 = FakeKernel32()
    stops = StopRequests(exit_now=exits.append, clock=clock)
    handled = stops.install(signals=FakeSignals(SIGINT=2, SIGBREAK=21, handlers={}), platform="win32",
                            kernel32=kernel32, functype=HANDLER_TYPE)
    assert handled == ["SIGINT", "SIGBREAK", "console close/logoff/shutdown"]
    assert isinstance(kernel32.handler, HANDLER_TYPE)  # a C function pointer, as Windows gets it
    return stops, kernel32


def test_closing_the_console_drains_within_what_windows_grants() -> None:
    clock, exits = Clock(), []
    stops, kernel32 = windows_stops(clock, exits)
    assert stops.budget(30.0) == 30.0  # no console event: OCTOHUB_SHUTDOWN_TIMEOUT
    answer: list[int] = []
    # Windows calls the handler on a thread it creates; returning lets it end the process.
    windows = threading.Thread(target=lambda: answer.append(kernel32.handler(CTRL_CLOSE_EVENT)))
    windows.start()
    assert stops.requested.wait(5)
    assert stops.budget(30.0) == 5.0 - 2 * GRANT_MARGIN  # the drain fits in the 5 s of a close
    windows.join(0.2)
    assert windows.is_alive() and answer == []  # held while the node stops
    stops.stopped.set()
    windows.join(5)
    assert answer == [1] and exits == []


def test_the_hold_ends_before_windows_would_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(stop_signals.CONSOLE_GRANTS, CTRL_SHUTDOWN_EVENT, GRANT_MARGIN + 0.3)  # a grant of 0.3 s
    stops, kernel32 = windows_stops(time.monotonic, [])
    begun = time.monotonic()
    assert kernel32.handler(CTRL_SHUTDOWN_EVENT) == 1  # the node never said it stopped: returns all the same
    assert 0.25 <= time.monotonic() - begun < 5
    assert stops.requested.is_set() and stops.budget(30.0) == 0.0


def test_ctrl_c_goes_on_to_python_and_a_second_one_exits_from_windows_thread() -> None:
    clock, exits = Clock(), []
    stops, kernel32 = windows_stops(clock, exits)
    for event in (CTRL_C_EVENT, CTRL_BREAK_EVENT):
        assert kernel32.handler(event) == 0  # not handled: the C runtime makes it SIGINT / SIGBREAK
    assert not stops.requested.is_set() and exits == []
    stops.on_signal(2, None)  # Python ran the SIGINT handler: the drain started
    assert kernel32.handler(CTRL_C_EVENT) == 0 and exits == [1]  # cold stop, even if the main thread waits


def test_a_console_handler_windows_refuses_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    stops = StopRequests()
    handled = stops.install(signals=FakeSignals(SIGINT=2, handlers={}), platform="win32",
                            kernel32=FakeKernel32(ok=False), functype=HANDLER_TYPE)
    assert handled == ["SIGINT"]
    assert "closing the console window ends the node without a drain" in caplog.text

