"""The Windows API through ctypes, in one place: the process's working set, the console control handler
and the Job Object that ends a process tree as one.

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

    __all__ = ["HandlerRoutine", "join_new_job", "kernel32", "last_error", "working_set"]

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
    kernel32.CreateJobObjectW.argtypes = [wintypes.LPVOID, wintypes.LPCWSTR]
    kernel32.CreateJobObjectW.restype = wintypes.HANDLE
    kernel32.SetInformationJobObject.argtypes = [wintypes.HANDLE, ctypes.c_int, wintypes.LPVOID, wintypes.DWORD]
    kernel32.SetInformationJobObject.restype = wintypes.BOOL
    kernel32.AssignProcessToJobObject.argtypes = [wintypes.HANDLE, wintypes.HANDLE]
    kernel32.AssignProcessToJobObject.restype = wintypes.BOOL
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    kernel32.CloseHandle.restype = wintypes.BOOL

    #: JOBOBJECTINFOCLASS JobObjectExtendedLimitInformation, and the limit that ends a job's processes
    #: when its last handle closes (winnt.h).
    _JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9
    _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000

    class _IoCounters(ctypes.Structure):
        """IO_COUNTERS (winnt.h)."""

        _fields_ = [(name, ctypes.c_ulonglong) for name in (
            "ReadOperationCount", "WriteOperationCount", "OtherOperationCount",
            "ReadTransferCount", "WriteTransferCount", "OtherTransferCount")]

    class _BasicLimits(ctypes.Structure):
        """JOBOBJECT_BASIC_LIMIT_INFORMATION (winnt.h)."""

        _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64), ("PerJobUserTimeLimit", ctypes.c_int64),
                    ("LimitFlags", wintypes.DWORD), ("MinimumWorkingSetSize", ctypes.c_size_t),
                    ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", wintypes.DWORD),
                    ("Affinity", ctypes.c_size_t), ("PriorityClass", wintypes.DWORD),
                    ("SchedulingClass", wintypes.DWORD)]

    class _ExtendedLimits(ctypes.Structure):
        """JOBOBJECT_EXTENDED_LIMIT_INFORMATION (winnt.h)."""

        _fields_ = [("BasicLimitInformation", _BasicLimits), ("IoInfo", _IoCounters),
                    ("ProcessMemoryLimit", ctypes.c_size_t), ("JobMemoryLimit", ctypes.c_size_t),
                    ("PeakProcessMemoryUsed", ctypes.c_size_t), ("PeakJobMemoryUsed", ctypes.c_size_t)]

    def working_set() -> Optional[int]:
        """This process's working set (its resident memory now) in bytes; None if Windows does not say."""
        counters = _ProcessMemoryCounters()
        counters.cb = ctypes.sizeof(counters)
        if not kernel32.K32GetProcessMemoryInfo(kernel32.GetCurrentProcess(), ctypes.byref(counters), counters.cb):
            return None
        return int(counters.WorkingSetSize)

    def join_new_job() -> Optional[int]:
        """A Job Object that ends its processes when its last handle closes, with this process in it.

        Returns its handle (kept open by the caller for as long as the process lives), or None if
        Windows refused (inside a job that forbids nesting, before Windows 8: the tree then ends as
        the OS ends it).
        """
        job = kernel32.CreateJobObjectW(None, None)
        if not job:
            return None
        limits = _ExtendedLimits()
        limits.BasicLimitInformation.LimitFlags = _JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not kernel32.SetInformationJobObject(job, _JOB_OBJECT_EXTENDED_LIMIT_INFORMATION,
                                                ctypes.byref(limits), ctypes.sizeof(limits)) \
                or not kernel32.AssignProcessToJobObject(job, kernel32.GetCurrentProcess()):
            kernel32.CloseHandle(job)
            return None
        return int(job)

    def last_error() -> int:
        """The error code the last failed call of :data:`kernel32` on this thread left (``GetLastError``)."""
        return ctypes.get_last_error()

else:
    __all__: list[str] = []
