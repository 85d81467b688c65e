"""The watchdog thread: it alone decides when to (re)connect.

It notices a connection that ended, a path that stopped answering pings, and a
hub that announced it is dropping us; it waits as :class:`Backoff` says and
starts a new connection with a freshly signed address. It also expires task
time limits and writes the periodic status line, so the node has one timer thread.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Optional

from .backoff import Backoff
from .connection import CLOSE_TIMEOUT, Connection
from .exceptions import GaveUpError

if TYPE_CHECKING:
    from .client import NodeWebSocketClient

__all__ = ["Watchdog"]

#: Longest sleep between two checks (seconds): bounds how late a task time limit fires.
TICK = 0.25

#: Connections dropped this soon after opening, in a row, suggest a duplicate pc_id.
SHORT_DROPS_WARNING = 3


def reregister_margin(read_timeout: float) -> float:
    """Seconds past the hub's read deadline before it has surely cleaned an abandoned connection up."""
    return max(2.0, 0.1 * read_timeout)


class Watchdog:
    """Owns reconnection for one client. Call :meth:`start`, then :meth:`stop`."""

    def __init__(self, client: "NodeWebSocketClient") -> None:
        s = client.settings
        self._client = client
        self._log = client.log
        self._settings = s
        self._backoff = Backoff(s.reconnect_interval, s.reconnect_max_interval)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.conn: Optional[Connection] = None
        self.attempts = 0
        self.retries = 0          # index into the backoff: retries since the last stable connection
        self.failures = 0         # consecutive failed attempts, for OCTOHUB_MAX_RECONNECT_ATTEMPTS
        self.short_drops = 0
        self.replaced = False
        self.gave_up = False
        #: Why we are closing the current connection ourselves ("replaced", "re-register"), if we are.
        self._closing_for: Optional[str] = None
        #: When the hub has surely cleaned up every connection we abandoned (monotonic), if one is pending.
        self.reregister_at: Optional[float] = None
        self._next_attempt = 0.0
        self._next_status = time.monotonic() + s.status_interval
        # Daemon: if the program exits without stop(), this thread must not hold it open.
        self.thread = threading.Thread(target=self._run, name="octohub-watchdog", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        """Make the watchdog look at the connection now (called from other threads)."""
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
            try:
                self._step(time.monotonic())
            except Exception:  # the watchdog must outlive any bug of ours
                self._log.exception("watchdog step failed; carrying on")
            self._wake.wait(self._sleep_time())
            self._wake.clear()

    def _sleep_time(self) -> float:
        now = time.monotonic()
        limit = TICK
        if self.conn is None:
            limit = min(limit, max(0.0, self._next_attempt - now))
        return limit

    def _step(self, now: float) -> None:
        conn = self.conn
        if conn is not None and not conn.thread.is_alive():
            self._ended(conn, now)
            conn = self.conn = None
        if conn is None and not self.gave_up and now >= self._next_attempt:
            self._connect()
        elif conn is not None:
            self._check_alive(conn, now)
        self._client.runner.expire(now)
        if self._settings.status_interval and now >= self._next_status:
            self._next_status = now + self._settings.status_interval
            self._client.log_status()

    def _connect(self) -> None:
        self.attempts += 1
        self.replaced = False
        self.conn = self._client.new_connection(self.attempts)
        self.conn.start()

    def _check_alive(self, conn: Connection, now: float) -> None:
        s = self._settings
        if conn.opened_at is None:
            return  # the socket's own timeout bounds the handshake
        if conn.closing_since is not None:
            if now - conn.closing_since > CLOSE_TIMEOUT:
                conn.abort()  # the hub did not answer our close frame
            return
        if self.replaced:
            self._close(conn, "replaced", "closing the connection the hub replaced")
            return
        silent = now - conn.last_pong
        if silent > s.ping_interval + s.ping_timeout + 1.0:
            self._log.warning("no pong for %.1f s: the path to the hub is dead; reconnecting", silent)
            conn.abort()
            return
        if self.reregister_at is not None and now >= self.reregister_at:
            due, self.reregister_at = self.reregister_at, None
            if conn.opened_at < due:
                self._client.reregistering()
                self._close(conn, "re-register", (
                    "re-registering: a connection this node abandoned earlier has now surely been cleaned up by "
                    "the hub (OCTOHUB_HUB_READ_TIMEOUT=%g s), which can make a hub forget the current one; "
                    "closing it and connecting again" % s.hub_read_timeout))
                return
        if now - conn.opened_at >= s.stable_after and (self.retries or self.failures or self.short_drops):
            self.retries = self.failures = self.short_drops = 0

    def _close(self, conn: Connection, why: str, message: str) -> None:
        """Close ``conn`` with a close handshake; the next connection opens only after it ended."""
        self._log.info("%s", message)
        self._closing_for = why
        conn.begin_close()

    def _ended(self, conn: Connection, now: float) -> None:
        if self._stopping.is_set():
            return
        planned, self._closing_for = self._closing_for, None
        read_timeout = self._settings.hub_read_timeout
        if conn.opened_at is not None and conn.close_code is None and read_timeout:
            # No close handshake: the hub may still hold this connection until its read deadline, and
            # a hub that forgets the pc_id when that cleanup runs would then forget our next connection.
            due = now + read_timeout + reregister_margin(read_timeout)
            self.reregister_at = max(self.reregister_at or due, due)
        if planned == "re-register":
            self._next_attempt = now  # break-before-make: the old session is over, connect at once
            self._client.connection_lost(conn, 0.0, planned=True)
            return
        lived = None if conn.opened_at is None else now - conn.opened_at
        stable = lived is not None and lived >= self._settings.stable_after
        if stable:
            self.retries = self.failures = self.short_drops = 0
        else:
            self.failures += 1
            if lived is not None and (conn.close_code is None or self.replaced):
                self.short_drops += 1
                self._warn_duplicate(lived)
        limit = self._settings.max_reconnect_attempts
        if limit and self.failures >= limit:
            self._client.connection_lost(conn, None)
            self._give_up(conn)
            return
        delay = self._backoff.delay(self.retries)
        self.retries += 1
        self._next_attempt = now + delay
        self._client.connection_lost(conn, delay)

    def _warn_duplicate(self, lived: float) -> None:
        if self.short_drops % SHORT_DROPS_WARNING == 0:
            self._log.warning(
                "the hub dropped this node %d time(s) in a row, %.1f s after connecting: another node with "
                "pc_id %s is probably connected (the hub keeps one connection per pc_id); give each node its "
                "own OCTOHUB_PC_ID or OCTOHUB_INSTANCE", self.short_drops, lived, self._client.pc_id)

    def _give_up(self, conn: Connection) -> None:
        self.gave_up = True
        error = GaveUpError(
            f"gave up after {self.failures} consecutive failed connection attempts "
            f"(OCTOHUB_MAX_RECONNECT_ATTEMPTS={self._settings.max_reconnect_attempts}); "
            f"last error: {conn.error or 'connection closed'}")
        self._log.error("%s", error)
        self._client.gave_up(error)
