"""What the node says and counts about its connections: opened, lost, failed, given up.

It logs and counts; the node's state is changed by _ops/node_state.py alone.

A failure that repeats on every attempt (a wrong key, a hub that is down) is news
once: the first of a kind is logged at WARNING with its hint, the repeats at INFO,
and a WARNING again every :data:`REPEAT_WARNING_INTERVAL` seconds while it lasts.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

from .._ops.stats import Stats
from .._transport.api_lookup import plaintext_host
from .._transport.connection import Connection
from .reconnect import Decision

__all__ = ["ConnectionLog", "REPEAT_WARNING_INTERVAL"]

#: A failure that repeats on every attempt is logged at WARNING once per this many seconds (INFO between).
REPEAT_WARNING_INTERVAL = 300.0


class ConnectionLog:
    """Log lines and stats for connection events, from the connection and watchdog threads."""

    def __init__(self, *, pc_id: str, stats: Stats, log: logging.LoggerAdapter) -> None:
        self._pc_id = pc_id
        self._stats = stats
        self._log = log
        self._opened_before = False
        self._warned: dict[str, tuple[float, int]] = {}  # failure kind -> (last WARNING, repeats since)
        self._plaintext_warned = False

    def address(self, url: str) -> None:
        """The node will talk to ``url`` (the API's at start, each WebSocket address): one WARNING, the
        first time one is plaintext to a host off this machine. Never logs the URL (it carries a signature)."""
        host = plaintext_host(url)
        if host is None or self._plaintext_warned:
            return
        self._plaintext_warned = True
        self._log.warning("talking to %s without TLS (%s://): anyone on the path can read tasks and results and, "
                          "since only the URL is signed, inject tasks; set OCTOHUB_TLS=true (https/wss) for a hub "
                          "off this machine", host, url.split(":", 1)[0].lower())

    def opened(self, conn: Connection) -> None:
        """``conn`` completed its handshake (connection thread)."""
        self._warned.clear()  # the next failure is news again
        if self._opened_before:
            self._stats.incr("reconnects")
        self._opened_before = True
        proxy = conn.route.proxy if conn.route is not None else None
        self._log.info("WebSocket connection %d established%s", conn.number, f" via the proxy {proxy}" if proxy else "")

    def ended(self, conn: Connection, decision: Decision) -> None:
        """``conn`` ended and the watchdog decided what comes next (watchdog thread)."""
        if decision.duplicate_drops:
            self._log.warning(
                "the hub dropped this node %d time(s) in a row, soon after connecting: another node with "
                "pc_id %s is probably connected (the hub keeps one connection per pc_id); give each node its "
                "own OCTOHUB_PC_ID or OCTOHUB_INSTANCE", decision.duplicate_drops, self._pc_id)
        if decision.planned or decision.resumed:
            self._log.info("connection %d %s; connecting again", conn.number,
                           "closed to re-register" if decision.planned else "dropped after the pause")
            return
        self._stats.last_error = conn.error
        opened = conn.opened_at is not None
        level, repeats = logging.WARNING, 0
        if not opened:
            self._stats.incr("connect_failures")
            level, repeats = self.failure_level(conn.error_kind or "unknown")
        self._log.log(level, "connection %d %s (%s); %s%s", conn.number, "lost" if opened else "failed",
                      conn.error or f"code {conn.close_code}",
                      "no more attempts" if decision.delay is None else f"next attempt in {decision.delay:.1f} s",
                      f" ({repeats} more failure(s) of this kind since the last warning)" if repeats else "")
        if decision.delay is None:
            self._stats.last_error = decision.give_up
            self._log.error("%s", decision.give_up)

    def failure_level(self, kind: str, now: Optional[float] = None) -> tuple[int, int]:
        """(log level, repeats kept quiet since the last warning) for a failure of ``kind``."""
        now = time.monotonic() if now is None else now
        last, repeats = self._warned.get(kind, (None, 0))
        if last is None or now - last >= REPEAT_WARNING_INTERVAL:
            self._warned[kind] = (now, 0)
            return logging.WARNING, repeats
        self._warned[kind] = (last, repeats + 1)
        return logging.INFO, 0
