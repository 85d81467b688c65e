"""Counters a node keeps about itself, readable at any time from any thread."""
from __future__ import annotations

import threading
from typing import Any, Optional

__all__ = ["Stats"]

#: Counters, in the order stats() and /metrics show them.
COUNTERS = (
    "tasks_received", "tasks_completed", "tasks_failed", "tasks_rejected", "tasks_timed_out",
    "tasks_duplicate", "bad_frames", "results_dropped", "results_resent", "reconnects", "connect_failures",
    "reregistrations",
)


class Stats:
    """Thread-safe counters plus the few facts that are not counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self.state = "stopped"
        self.connected_since: Optional[float] = None
        self.last_error: Optional[str] = None
        self.clock_skew: Optional[float] = None

    def incr(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, Any]:
        """A copy of every counter and fact."""
        with self._lock:
            snap: dict[str, Any] = dict(self._counts)
        snap.update(
            state=self.state, connected_since=self.connected_since,
            last_error=self.last_error, clock_skew=self.clock_skew,
        )
        return snap
