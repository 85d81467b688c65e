"""The watchdog thread: it alone (re)connects, as :class:`ReconnectPolicy` decides.

It notices a connection that ended, a path that stopped answering pings, a hub that
announced it is dropping us, a registration the hub may have lost, a pause of the
process or a suspend of the machine (clock_jumps.py), and a change of the local address the
system would use towards the hub (_transport/netpath.py: a network change). After a short pause or a
network change it checks the path at once with a probe, and reconnects when no answer
comes in time (_transport/netpath.py); after a pause longer than the keep-alive allows it
reconnects at once. It waits as the policy says and starts a new connection, only once
the old one is over (break-before-make).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable, Optional

from .._transport.connection import CLOSE_TIMEOUT, Connection
from .._transport.link import Link
from .._transport.netpath import PathCheck
from .clock_jumps import MIN_PAUSE, Pause, Tick, detect_pause
from .reconnect import Decision, Ending, ReconnectPolicy

__all__ = ["Watchdog"]

#: Longest sleep between two looks (seconds): how late a pause or a network change is noticed.
TICK = 1.0
#: Sleep between two looks while a connection this loop aborted is ending (seconds): its thread's end may
#: come just after the wake-up it sends.
ENDING_LOOK = 0.05


class Watchdog:
    """Owns reconnection for one node. Call :meth:`start`, then :meth:`stop`.

    Args:
        connect: builds connection attempt number N (not started).
        policy: the reconnect policy to start from.
        dead_after: seconds without a pong after which the path counts as dead.
        on_ended: told how each connection ended and what the policy decided (a ``Decision``
            whose ``delay`` is None means the node gave up; no attempt follows).
        on_reregister: told that the watchdog closes a connection to register again.
        on_tick: told the time of every turn of the loop and when the next comes at the latest, on
            this thread (the node's liveness, and the systemd watchdog pings that depend on it: a
            wedged loop stops them).
        pause_after: seconds of absence (a stopped process, a suspended machine) after which the
            connection counts as dead and a new one starts at once (``clock.pause_threshold``);
            0 never. A shorter absence of :data:`clock.MIN_PAUSE` or more is probed.
        path: checks the path after a short pause or a network change (_transport/netpath.py); None: no
            probes, a pause of ``pause_after`` or more ends the connection, a shorter one nothing.
        tick: the longest sleep of the loop (at most :data:`TICK`: the systemd watchdog may want it shorter).
        on_pause: told of each such pause, on this thread (the node counts them).
        link: the node's current connection (_transport/link.py): the watchdog attaches each attempt there.
    """

    def __init__(
        self,
        *,
        connect: Callable[[int], Connection],
        policy: ReconnectPolicy,
        dead_after: float,
        on_ended: Callable[[Connection, Decision], None],
        on_reregister: Callable[[], None],
        log: logging.LoggerAdapter,
        on_tick: Callable[[float, float], None] = lambda now, until: None,
        pause_after: float = 0.0,
        on_pause: Callable[[Pause], None] = lambda pause: None,
        link: Optional[Link] = None,
        path: Optional[PathCheck] = None,
        tick: float = TICK,
    ) -> None:
        self._connect_to = connect
        self._on_tick = on_tick
        self.policy = policy
        self._dead_after = dead_after
        self._on_ended = on_ended
        self._on_reregister = on_reregister
        self._log = log
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._link = Link() if link is None else link
        self.attempts = 0
        self._replaced = False
        self._closing_for: Optional[str] = None  # why we close the current connection ourselves
        self._next_attempt = 0.0
        self._pause_after, self._on_pause = pause_after, on_pause
        self._last_look: Optional[Tick] = None  # the clocks at the previous step
        self._tick = min(tick, TICK)
        self._slept = self._tick  # how long the loop last asked to sleep
        self._resumed = False  # the current connection is dropped because of a pause or a failed probe
        self._path = path
        self._ending: Optional[Connection] = None  # the connection this loop aborted, whose thread is ending
        # Daemon: if the program exits without stop(), this thread must not hold it open.
        self.thread = threading.Thread(target=self._run, name="octohub-watchdog", daemon=True)

    def start(self) -> None:
        self.thread.start()

    @property
    def gave_up(self) -> bool:
        """The policy gave up (OCTOHUB_MAX_RECONNECT_ATTEMPTS): no attempt follows. The node's state
        says so to everyone else (_ops/node_state.py); this is the loop's own view of its decision."""
        return self._next_attempt == math.inf

    @property
    def conn(self) -> Optional[Connection]:
        """The current connection attempt (the link's), None between two."""
        return self._link.conn

    def wake(self) -> None:
        """Make the watchdog look at the connection now (called from other threads)."""
        self._wake.set()

    def replaced(self) -> None:
        """The hub announced that another connection with our pc_id replaces this one."""
        self._replaced = True
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """Stop the loop, close the connection with 1000 and join both threads."""
        self._stopping.set()
        self._wake.set()
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)
        conn = self.conn
        if conn is not None:
            conn.close(timeout=max(timeout, 1.0))

    # -- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            try:
                self.step(now, wall=time.time())
            except Exception:  # the watchdog must outlive any bug of ours
                self._log.exception("watchdog step failed; carrying on")
            self._slept = self._sleep_time()
            try:
                self._on_tick(now, now + self._slept)
            except Exception:
                self._log.exception("watchdog tick failed; carrying on")
            self._wake.wait(self._slept)
            self._wake.clear()

    def _sleep_time(self) -> float:
        now = time.monotonic()
        conn = self.conn
        if conn is None:
            return min(self._tick, max(0.0, self._next_attempt - now))
        if conn is self._ending:
            return min(self._tick, ENDING_LOOK)
        dues = [] if conn.opened_at is None else [conn.last_pong + self._dead_after]
        if self._path is not None and self._path.due is not None:
            dues.append(self._path.due)
        # A little past the earliest deadline, so that the look finds it passed.
        return min([self._tick] + [max(0.0, due - now) + 0.01 for due in dues])

    def step(self, now: float, *, wall: Optional[float] = None) -> None:
        """One look at the connection at time ``now`` (the loop calls it; tests drive it directly).

        ``wall`` is ``time.time()`` at the same moment: with it, a pause since the previous
        step is noticed too.
        """
        if wall is not None:
            self._notice_pause(Tick(now, wall))
        conn = self.conn
        if conn is not None and not conn.thread.is_alive():
            self._ended(conn, now)
            conn = None
            self._link.attach(None)
        if conn is None:
            if self._path is not None and not self.gave_up and self._next_attempt > now and self._path.new_route():
                self._next_attempt = now  # a network came back, or changed: the wait says nothing about it
            if now >= self._next_attempt:
                self.attempts += 1
                self._replaced = False
                conn = self._connect_to(self.attempts)
                self._link.attach(conn)
                conn.start()
        else:
            self._check_alive(conn, now)

    def _notice_pause(self, tick: Tick) -> None:
        previous, self._last_look = self._last_look, tick
        if previous is None or not self._pause_after or self.gave_up:
            return
        path = self._path
        threshold = self._pause_after if path is None else min(MIN_PAUSE, self._pause_after)
        pause = detect_pause(previous, tick, expected=self._slept, threshold=threshold)
        if pause is None:
            return
        self._on_pause(pause)
        conn = self.conn
        if path is not None and pause.seconds <= self._pause_after:
            # Between connections the wait goes on as it was; a connection still opening starts again.
            if conn is not None and not path.start(conn, tick.monotonic, f"{pause.kind.value} for {pause.seconds:.1f} s"):
                self._resumed = True
                self._abort(conn)
            return
        # The hub is not at fault, so no backoff: the next attempt starts now, with a new signed address.
        self._log.info("%s for %.1f s, longer than the keep-alive allows: the connection is probably dead; "
                       "connecting again now", pause.kind.value, pause.seconds)
        if conn is None:
            self._next_attempt = tick.monotonic
        else:
            self._resumed = True
            self._abort(conn)

    def _check_alive(self, conn: Connection, now: float) -> None:
        if conn.opened_at is None:
            return  # the socket's own timeout bounds the handshake
        if conn.closing_since is not None:
            if now - conn.closing_since > CLOSE_TIMEOUT:
                self._abort(conn)  # the hub did not answer our close frame
            return
        if self._replaced:
            self._close(conn, "replaced", "closing the connection the hub replaced")
            return
        if self._path is not None and self._path.dead(conn, now):
            self._resumed = True  # not the hub's fault: no backoff
            self._abort(conn)
            return
        silent = now - conn.last_pong
        if silent > self._dead_after:
            self._log.warning("no pong for %.1f s: the path to the hub is dead; reconnecting", silent)
            self._abort(conn)
            return
        self.policy, due = self.policy.reregister_due(conn.opened_at, now)
        if due:
            self._on_reregister()
            self._close(conn, "re-register", (
                "re-registering: the hub has now surely cleaned up a connection this node abandoned earlier "
                "(OCTOHUB_HUB_READ_TIMEOUT=%g s), which can make a hub forget the current one; closing it and "
                "connecting again" % self.policy.hub_read_timeout))
            return
        if now - conn.opened_at >= self.policy.stable_after:
            self.policy = self.policy.stayed_up()

    def _abort(self, conn: Connection) -> None:
        """End ``conn`` without a close handshake; the next attempt follows as soon as its thread ended."""
        self._ending = conn
        conn.abort()

    def _close(self, conn: Connection, why: str, message: str) -> None:
        """Close ``conn`` with a close handshake; the next connection opens only after it ended."""
        self._log.info("%s", message)
        self._closing_for = why
        conn.begin_close()

    def _ended(self, conn: Connection, now: float) -> None:
        if self._stopping.is_set():
            return
        why, self._closing_for = self._closing_for, None
        self._ending = None
        resumed, self._resumed = self._resumed, False
        ending = Ending(lived=None if conn.opened_at is None else now - conn.opened_at,
                        close_code=conn.close_code, replaced=self._replaced,
                        planned=why == "re-register", resumed=resumed, error=conn.error or "")
        self.policy, decision = self.policy.after(ending, now)
        self._next_attempt = math.inf if decision.delay is None else now + decision.delay
        self._on_ended(conn, decision)
