"""The node recycles itself: OCTOHUB_MAX_TASKS, OCTOHUB_MAX_MEMORY, OCTOHUB_MAX_UPTIME (docs/recycling.md).

Once a limit is reached the node stops taking tasks (refused as by a stopping node), drains,
sends its results and stops; ``octohub-node`` then exits with ``ExitCode.RECYCLE`` (3), so that
its service manager starts it again, with its ledger. What is measured as memory is
``rss_bytes()`` of _platform/memory.py: the current resident size on Linux and Windows, the peak on
macOS.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from .._platform.memory import rss_bytes

__all__ = ["Recycler"]

#: How often the memory is read (on the watchdog thread's tick).
MEMORY_EVERY = 1.0


class Recycler:
    """Says once, with the reason, that the node should recycle.

    Args:
        max_tasks, max_memory, max_uptime: the settings (0: that limit is off). ``max_tasks`` is
            counted by the runner, which calls :meth:`tasks_reached` after accepting the last one.
        close: stops the node taking tasks; called first, before the reason shows, on the thread that
            noticed (holding the runner's lock for OCTOHUB_MAX_TASKS): must not take that lock.
        on_recycle: called once with the reason, next, on the same thread; must not block.
        rss: reads the memory in bytes (``rss_bytes()``; a test may pass another).
    """

    def __init__(self, *, max_tasks: int, max_memory: int, max_uptime: float, close: Callable[[], None],
                 on_recycle: Callable[[str], None], log: logging.LoggerAdapter,
                 rss: Callable[[], Optional[int]] = rss_bytes) -> None:
        self._max_tasks, self._max_memory, self._max_uptime = max_tasks, max_memory, max_uptime
        self._close, self._on_recycle, self._log, self._rss = close, on_recycle, log, rss
        self._lock = threading.Lock()
        self._fired = False
        self._started = time.monotonic()
        self._memory_read = 0.0
        #: Why the node recycles (None: it does not); set once per run.
        self.reason: Optional[str] = None

    @property
    def watches(self) -> bool:
        """True if a limit read on the tick (memory or uptime) is on."""
        return bool(self._max_memory or self._max_uptime)

    def started(self, now: float) -> None:
        """The node (re)starts: uptime counts from ``now`` and the reason is cleared."""
        with self._lock:
            self._started, self._memory_read, self.reason, self._fired = now, 0.0, None, False

    def tasks_reached(self) -> None:
        """The runner accepted its OCTOHUB_MAX_TASKS-th task (called holding the runner's lock)."""
        self._reached(f"max_tasks: {self._max_tasks} tasks accepted (OCTOHUB_MAX_TASKS={self._max_tasks})")

    def tick(self, now: float) -> None:
        """Check the uptime and, every MEMORY_EVERY s, the memory (the watchdog thread's tick)."""
        if self._fired:
            return
        if self._max_uptime and now - self._started >= self._max_uptime:
            self._reached(f"max_uptime: up {now - self._started:.0f} s (OCTOHUB_MAX_UPTIME={self._max_uptime:g})")
        elif self._max_memory and now - self._memory_read >= MEMORY_EVERY:
            self._memory_read = now
            rss = self._rss()
            if rss is not None and rss >= self._max_memory * 2**20:
                self._reached(f"max_memory: {rss / 2**20:.0f} MB resident (OCTOHUB_MAX_MEMORY={self._max_memory})")

    def _reached(self, reason: str) -> None:
        with self._lock:
            if self._fired:
                return
            self._fired = True
        self._close()  # whoever sees the reason sees a node that takes no more tasks
        self.reason = reason
        self._log.info("recycling: %s; taking no new tasks, draining, then stopping", reason)
        self._on_recycle(reason)
