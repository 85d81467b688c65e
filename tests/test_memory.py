"""One reading of a process's memory for the node (OCTOHUB_MAX_MEMORY) and for a child process
(max_memory_per_child): _platform/memory.py's rss_bytes(), one branch per platform.

Linux is measured for real; the macOS, other-POSIX and Windows branches run here with sys.platform
simulated, Windows with its binding (_platform/windows.py's working_set) injected, since ctypes'
Windows API does not exist on Linux (mypy --platform win32 checks that binding in .ci/run)."""
from __future__ import annotations

import os
import sys

import psutil
import pytest

from octohub_sync._isolation import child
from octohub_sync._node import recycle
from octohub_sync._platform import memory, windows
from octohub_sync._platform.memory import rss_bytes


def test_the_node_and_a_child_process_read_memory_the_same_way() -> None:
    assert recycle.Recycler.__init__.__kwdefaults__["rss"] is rss_bytes
    assert child.rss_bytes is rss_bytes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/statm is Linux's")
def test_linux_reads_the_current_resident_size() -> None:
    measured, reference = rss_bytes(), psutil.Process(os.getpid()).memory_info().rss
    assert measured is not None and abs(measured - reference) < 0.1 * reference


def test_macos_reads_the_peak_from_getrusage_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated: with sys.platform darwin, ru_maxrss is taken as bytes, as macOS reports it."""
    resource = pytest.importorskip("resource")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert rss_bytes() == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_other_posix_systems_read_the_peak_in_kib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated: a BSD's ru_maxrss is in KiB."""
    resource = pytest.importorskip("resource")
    monkeypatch.setattr(sys, "platform", "freebsd14")
    assert rss_bytes() == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_windows_reads_the_working_set_through_the_one_binding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated: sys.platform win32, and the binding's working_set() injected (it reads kernel32 on Windows)."""
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(windows, "working_set", lambda: 123 * 2**20, raising=False)
    assert rss_bytes() == 123 * 2**20
    monkeypatch.setattr(windows, "working_set", lambda: None)  # K32GetProcessMemoryInfo failed
    assert rss_bytes() is None


def test_memory_that_cannot_be_read_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated: "win32" without its binding (as on Linux), and a Linux whose /proc is not mounted."""
    monkeypatch.setattr(sys, "platform", "win32")
    assert rss_bytes() is None
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(memory, "open", lambda *args, **kwargs: open("/nonexistent/statm", "rb"), raising=False)
    assert rss_bytes() is None


@pytest.mark.skipif(sys.platform == "win32", reason="what other systems do not load")
def test_other_systems_never_load_the_windows_bindings() -> None:
    assert windows.__all__ == []
    assert [name for name in ("kernel32", "HandlerRoutine", "working_set", "last_error") if hasattr(windows, name)] == []
