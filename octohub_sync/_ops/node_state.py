"""The node's state, and the facts that change with it: its one writer.

:class:`NodeStatus` alone changes the state; its transitions are called by the node
(client.py), which hears of the events from the parts that see them: the receiver
(``node_ready`` went out), the watchdog (a connection ended, or it gave up), and the
node's own start and stop. The rules live here, not at the call sites: once stopping,
only stopped (or gave up) follows; a node that gave up says so until it starts again.
"""
from __future__ import annotations

import threading
import time
from enum import Enum
from typing import Optional

from ..exceptions import GaveUpError

__all__ = ["NodeState", "NodeStatus"]


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


class NodeStatus:
    """The node's state, since when it is connected, and why it gave up; readable from any thread.

    Attributes:
        connected_since: Unix time of the last ``node_ready`` while connected, else None.
        failure: why the node gave up reconnecting since its last start, else None.
    """

    def __init__(self) -> None:
        self._state = NodeState.STOPPED
        self.connected_since: Optional[float] = None
        self.failure: Optional[GaveUpError] = None
        self._lock = threading.Lock()  # transitions are read-decide-write

    @property
    def state(self) -> NodeState:
        """The state now (read only: the transitions below change it)."""
        return self._state

    def starting(self) -> None:
        """start(): connecting, with no failure from an earlier run."""
        with self._lock:
            self._state, self.connected_since, self.failure = NodeState.CONNECTING, None, None

    def ready(self) -> None:
        """``node_ready`` went out: connected (unless the node is stopping)."""
        with self._lock:
            if self._state is not NodeState.STOPPING:
                self._state, self.connected_since = NodeState.CONNECTED, time.time()

    def lost(self) -> None:
        """A connection ended and another attempt follows (unless the node is stopping)."""
        with self._lock:
            self.connected_since = None
            if self._state is not NodeState.STOPPING:
                self._state = NodeState.RECONNECTING

    def gave_up(self, reason: str) -> None:
        """No attempt follows (OCTOHUB_MAX_RECONNECT_ATTEMPTS): ``run_forever()`` raises ``failure``."""
        with self._lock:
            self.connected_since = None
            self.failure = GaveUpError(reason)
            if self._state is not NodeState.STOPPING:
                self._state = NodeState.GAVE_UP

    def stopping(self) -> None:
        """The node stops taking tasks and drains (stop(), or a recycle's decision)."""
        with self._lock:
            if self._state is not NodeState.GAVE_UP:
                self._state = NodeState.STOPPING

    def stopped(self) -> None:
        """stop() ended: stopped, or still gave up if it did."""
        with self._lock:
            self.connected_since = None
            self._state = NodeState.STOPPED if self.failure is None else NodeState.GAVE_UP
