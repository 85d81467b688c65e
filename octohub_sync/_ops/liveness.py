"""Alive and ready: the two questions a supervisor asks, answered once for ``/livez``, ``/readyz`` and systemd.

**Alive** means the process does its own work: the watchdog loop and the timers loop each
ticked when they said they would (an idle loop sleeps for seconds, and says so), give or take
:data:`MAX_TICK_AGE` seconds, and the node has not stopped. It says nothing
about the hub: during a hub outage the node is alive (it is reconnecting, as it should),
so a supervisor that restarts on "not alive" restarts only a wedged process.

**Ready** means the node can take tasks now: connected, ``node_ready`` sent, and a frame or
a pong from the hub within two ping intervals (a path that died silently is not ready).

Both are pure functions of a few facts, so they are tested without a thread or a socket.
"""
from __future__ import annotations

import threading
from typing import Iterable, Mapping, NamedTuple, Optional

from .stats import NodeState

__all__ = ["MAX_TICK_AGE", "Attempt", "Heartbeats", "Verdict", "liveness", "readiness"]

#: A loop this many seconds late for the tick it announced is wedged.
MAX_TICK_AGE = 10.0


class Verdict(NamedTuple):
    """An answer to "alive?" or "ready?", with the reason in words (for the probe's body and the log)."""

    ok: bool
    reason: str


class Heartbeats:
    """When each of the node's loops is due to tick next (``time.monotonic()``): written by the loops, read by probes.

    Args:
        names: the loops, by thread name.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = dict.fromkeys(names, 0.0)

    def reset(self, now: float) -> None:
        """The loops are starting: each is due from ``now``."""
        with self._lock:
            self._last = dict.fromkeys(self._last, now)

    def beat(self, name: str, now: float, until: Optional[float] = None) -> None:
        """Loop ``name`` ticked at ``now`` and will tick again by ``until`` (default: at once)."""
        with self._lock:
            self._last[name] = now if until is None else max(now, until)

    def ages(self, now: float) -> dict[str, float]:
        """Seconds each loop is late for the tick it announced (negative while it is not due yet)."""
        with self._lock:
            return {name: now - due for name, due in self._last.items()}


def liveness(state: NodeState, ages: Mapping[str, float], *, max_age: Optional[float] = None) -> Verdict:
    """Is the process alive: loops ticking and the node not stopped?

    Args:
        state: the node's state.
        ages: seconds each loop is late for its tick (:meth:`Heartbeats.ages`).
        max_age: a loop silent for longer is wedged (default :data:`MAX_TICK_AGE`, read at each call).
    """
    max_age = MAX_TICK_AGE if max_age is None else max_age
    if state in (NodeState.STOPPED, NodeState.GAVE_UP):
        return Verdict(False, f"the node is {state.value}")
    if state is NodeState.STOPPING:
        # Its loops end one by one while it drains; OCTOHUB_SHUTDOWN_TIMEOUT bounds the stop.
        return Verdict(True, "stopping")
    stale = sorted(name for name, age in ages.items() if age > max_age)
    if stale:
        return Verdict(False, ", ".join(f"{name} has not ticked for {ages[name]:.1f} s" for name in stale))
    return Verdict(True, f"{state.value}; loops ticking")


class Attempt(NamedTuple):
    """A connect attempt still under way: its number, how long it has run and its deadline (seconds)."""

    number: int
    running: float
    deadline: float


def readiness(state: NodeState, *, ready: bool, silent_for: Optional[float], ping_interval: float,
              attempt: Optional[Attempt] = None) -> Verdict:
    """Can the node take tasks now: connected, ``node_ready`` sent, the hub heard within two ping intervals?

    Args:
        state: the node's state.
        ready: ``node_ready`` went out on the current connection.
        silent_for: seconds since the last frame or pong from the hub on it (None: nothing yet).
        ping_interval: OCTOHUB_PING_INTERVAL; a live path answers a ping frame within one.
        attempt: the connect attempt under way, if any (one past its deadline is named: a name
            resolution or a SOCKS5 proxy's handshake can outlast it).
    """
    if state is not NodeState.CONNECTED or not ready:
        if attempt is not None and attempt.running > attempt.deadline:
            return Verdict(False, f"connecting: attempt {attempt.number} running for {attempt.running:.1f} s, "
                                  f"past its {attempt.deadline:g} s deadline (OCTOHUB_CONNECT_TIMEOUT)")
        return Verdict(False, f"the node is {state.value}")
    if silent_for is None or silent_for > 2 * ping_interval:
        heard = "nothing" if silent_for is None else f"no frame or pong for {silent_for:.1f} s"
        return Verdict(False, f"{heard} (limit {2 * ping_interval:g} s, two ping intervals)")
    return Verdict(True, "connected")
