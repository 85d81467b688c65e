"""What a node knows about itself: its state and counters, readable at any time from any thread."""
from __future__ import annotations

import itertools
import threading
from enum import Enum
from typing import Any, Optional

__all__ = ["COUNTERS", "NodeState", "Stats"]

#: Counters, in the order stats() and /metrics show them.
COUNTERS = (
    "tasks_received", "tasks_completed", "tasks_failed", "tasks_rejected", "tasks_timed_out", "tasks_cancelled",
    "tasks_duplicate", "bad_frames", "results_dropped", "results_resent", "reconnects", "connect_failures",
    "reregistrations", "ledger_errors", "pauses",
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
    """Thread-safe counters plus the few facts that are not counts.

    Each counter is an ``itertools.count``: ``next()`` on it is one call into C, which the GIL
    makes atomic, so counting takes no lock (two per task otherwise, on the busiest path).
    """

    def __init__(self) -> None:
        self._counts = {name: itertools.count() for name in COUNTERS}
        self._state = NodeState.STOPPED
        self._state_lock = threading.Lock()
        self.connected_since: Optional[float] = None
        self.last_error: Optional[str] = None
        self.clock_skew: Optional[float] = None

    @property
    def state(self) -> NodeState:
        """The node's state. Once STOPPING, only STOPPED follows: a connection that opens or ends
        during the drain (on the connection or watchdog thread) does not make a stopping node
        look connected or reconnecting."""
        return self._state

    @state.setter
    def state(self, state: NodeState) -> None:
        with self._state_lock:
            if self._state is not NodeState.STOPPING or state is NodeState.STOPPED:
                self._state = state

    def incr(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        counter = self._counts[name]
        for _ in range(n):
            next(counter)

    def snapshot(self) -> dict[str, Any]:
        """A copy of every counter and fact; ``state`` as its plain string."""
        snap: dict[str, Any] = {name: _value(counter) for name, counter in self._counts.items()}
        snap.update(
            state=self.state.value, connected_since=self.connected_since,
            last_error=self.last_error, clock_skew=self.clock_skew,
        )
        return snap


def _value(counter: "itertools.count[int]") -> int:
    """How far ``counter`` has counted, without advancing it (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])
