"""The Windows API through ctypes, in one place: the process's working set and the console control handler.

Every binding sits under ``if sys.platform == "win32":``, so other systems never load one (the names
do not exist there), and ``mypy --platform win32`` checks them against typeshed's ctypes, which
declares ``WinDLL`` and ``WINFUNCTYPE`` for Windows only. A caller reaches them from a branch of its
own on ``sys.platform == "win32"``, and imports this module there, on first use: a child process of
``isolation="process"`` loads ctypes only when it measures its memory (_platform/memory.py).
"""
from __future__ import annotations

import sys
from typing import Optional

if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    __all__ = ["HandlerRoutine", "kernel32", "last_error", "working_set"]

    class _ProcessMemoryCounters(ctypes.Structure):
        """PROCESS_MEMORY_COUNTERS (psapi.h)."""

        _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD)] + [
            (name, ctypes.c_size_t) for name in (
                "PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage", "QuotaPagedPoolUsage",
                "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage", "PagefileUsage", "PeakPagefileUsage")]

    #: ``BOOL WINAPI HandlerRoutine(DWORD dwCtrlType)`` (wincon.h): the type of a console control handler.
    HandlerRoutine = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)

    #: kernel32, loaded for this module alone: ctypes.windll's is shared with every library in the
    #: process, and the argument types set here must not change theirs. use_last_error: see last_error().
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.GetCurrentProcess.argtypes = []
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    # K32GetProcessMemoryInfo: kernel32's export of psapi's GetProcessMemoryInfo (Windows 7 and later).
    kernel32.K32GetProcessMemoryInfo.argtypes = [wintypes.HANDLE, ctypes.POINTER(_ProcessMemoryCounters),
                                                 wintypes.DWORD]
    kernel32.K32GetProcessMemoryInfo.restype = wintypes.BOOL
    kernel32.SetConsoleCtrlHandler.argtypes = [HandlerRoutine, wintypes.BOOL]
    kernel32.SetConsoleCtrlHandler.restype = wintypes.BOOL

    def working_set() -> Optional[int]:
        """This process's working set (its resident memory now) in bytes; None if Windows does not say."""
        counters = _ProcessMemoryCounters()
        counters.cb = ctypes.sizeof(counters)
        if not kernel32.K32GetProcessMemoryInfo(kernel32.GetCurrentProcess(), ctypes.byref(counters), counters.cb):
            return None
        return int(counters.WorkingSetSize)

    def last_error() -> int:
        """The error code the last failed call of :data:`kernel32` on this thread left (``GetLastError``)."""
        return ctypes.get_last_error()

else:
    __all__: list[str] = []
