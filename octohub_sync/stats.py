"""What a node knows about itself: its state and counters, readable at any time from any thread."""
from __future__ import annotations

import threading
from enum import Enum
from typing import Any, Optional

__all__ = ["COUNTERS", "NodeState", "Stats"]

#: Counters, in the order stats() and /metrics show them.
COUNTERS = (
    "tasks_received", "tasks_completed", "tasks_failed", "tasks_rejected", "tasks_timed_out",
    "tasks_duplicate", "bad_frames", "results_dropped", "results_resent", "reconnects", "connect_failures",
    "reregistrations", "ledger_errors",
)


class NodeState(str, Enum):
    """The node's state, as stats(), /healthz, /metrics and the status line show it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    #: It stopped reconnecting (OCTOHUB_MAX_RECONNECT_ATTEMPTS); nothing else is called "gave up".
    GAVE_UP = "gave up"

    @property
    def healthy(self) -> bool:
        """Doing its job, or retrying within OCTOHUB_MAX_RECONNECT_ATTEMPTS."""
        return self in (NodeState.CONNECTING, NodeState.CONNECTED, NodeState.RECONNECTING)


class Stats:
    """Thread-safe counters plus the few facts that are not counts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self.state = NodeState.STOPPED
        self.connected_since: Optional[float] = None
        self.last_error: Optional[str] = None
        self.clock_skew: Optional[float] = None

    def incr(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, Any]:
        """A copy of every counter and fact; ``state`` as its plain string."""
        with self._lock:
            snap: dict[str, Any] = dict(self._counts)
        snap.update(
            state=self.state.value, connected_since=self.connected_since,
            last_error=self.last_error, clock_skew=self.clock_skew,
        )
        return snap
