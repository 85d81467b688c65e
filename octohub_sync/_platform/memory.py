"""How much memory this process uses, as each platform measures it cheaply (:func:`rss_bytes`).

Read by the node's OCTOHUB_MAX_MEMORY (_node/recycle.py, docs/recycling.md) and by a child process
of ``isolation="process"`` for ``max_memory_per_child`` (_isolation/child.py):

- Linux: the current resident set size, from ``/proc/self/statm`` (no psutil).
- Windows: the current working set, ``K32GetProcessMemoryInfo`` (_platform/windows.py).
- macOS and other systems: the *peak* resident set size, ``resource.getrusage().ru_maxrss``
  (bytes on macOS, KiB elsewhere). The current size needs ``task_info`` through the Mach API,
  which is not worth its weight here: a peak that reached the ceiling is a fair reason to
  recycle, and it never goes down, so the process does not recycle later than it would on Linux.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

__all__ = ["rss_bytes"]


def rss_bytes() -> Optional[int]:
    """This process's memory in bytes, as this platform measures it (see the module's docstring).

    Returns:
        The current resident size (Linux, Windows) or the peak (macOS, other systems); None if it
        cannot be read, which a caller takes as "under every limit".
    """
    try:
        if sys.platform == "win32":
            from .windows import working_set  # ctypes and kernel32: loaded on the first reading

            return working_set()
        if sys.platform.startswith("linux"):
            with open("/proc/self/statm", "rb") as statm:  # the second field: the resident set, in pages
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        import resource  # POSIX only: imported here, never on Windows

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if sys.platform == "darwin" else int(peak) * 1024
    except (OSError, ValueError, IndexError, ImportError, AttributeError):
        return None
