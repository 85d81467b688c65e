"""What a node counts about itself, and the few facts beside its state; readable at any time from any thread."""
from __future__ import annotations

import itertools
from typing import Any, Optional

from .node_state import NodeState, NodeStatus

__all__ = ["COUNTERS", "NodeState", "Stats"]

#: Counters, in the order stats() and /metrics show them.
COUNTERS = (
    "tasks_received", "tasks_completed", "tasks_failed", "tasks_rejected", "tasks_timed_out", "tasks_cancelled",
    "tasks_duplicate", "bad_frames", "results_dropped", "results_resent", "reconnects", "connect_failures",
    "reregistrations", "ledger_errors", "pauses",
)


class Stats:
    """Thread-safe counters plus the few facts that are not counts; the state is ``status``'s (node_state.py).

    Each counter is an ``itertools.count``: ``next()`` on it is one call into C, which the GIL
    makes atomic, so counting takes no lock (two per task otherwise, on the busiest path).
    """

    def __init__(self, status: Optional[NodeStatus] = None) -> None:
        self._counts = {name: itertools.count() for name in COUNTERS}
        #: The node's state; only its own transitions change it.
        self.status = NodeStatus() if status is None else status
        self.last_error: Optional[str] = None
        self.clock_skew: Optional[float] = None

    @property
    def state(self) -> NodeState:
        """The node's state (read only: see node_state.py)."""
        return self.status.state

    def incr(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        counter = self._counts[name]
        for _ in range(n):
            next(counter)

    def snapshot(self) -> dict[str, Any]:
        """A copy of every counter and fact; ``state`` as its plain string."""
        snap: dict[str, Any] = {name: _value(counter) for name, counter in self._counts.items()}
        snap.update(
            state=self.status.state.value, connected_since=self.status.connected_since,
            last_error=self.last_error, clock_skew=self.clock_skew,
        )
        return snap


def _value(counter: "itertools.count[int]") -> int:
    """How far ``counter`` has counted, without advancing it (its repr is ``count(N)``)."""
    return int(repr(counter)[6:-1])
