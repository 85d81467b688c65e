"""Which local address the operating system would use now to reach a peer: a network change shows as a new one.

A laptop that moves to another Wi-Fi network, or a VPN that comes up or goes down, leaves an
open TCP connection on an address or a route that no longer works, with no error until a
keep-alive goes unanswered. Asking the routing table costs a UDP socket that is connected
(which sends nothing) and read back, a few system calls: the watchdog asks about once a second.
"""
from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["PROBE_TIMEOUT", "PathCheck", "local_address_towards"]

#: Seconds a probe (after a short pause or a network change) has to be answered before the path counts as dead.
PROBE_TIMEOUT = 2.5


def local_address_towards(peer: tuple) -> Optional[str]:
    """The local IP address a new connection to ``peer`` (a socket address, as ``getpeername()``
    gives it) would leave from now; None when no route leads there."""
    family = socket.AF_INET6 if ":" in str(peer[0]) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.connect(peer)
            return str(udp.getsockname()[0])
    except OSError:  # no route (network unreachable), or the address family is gone
        return None


class PathCheck:
    """Checks the path of the current connection at once after a short pause or a network change.

    A probe asks the hub for an answer (a JSON ping on the Go dialect, a ping frame on the seed
    one: ``Connection.ping``); any pong after it proves the path, none within
    :data:`PROBE_TIMEOUT` ends it. Without this, a connection on a dead path waits for the
    keep-alive to fail: up to OCTOHUB_PING_INTERVAL + OCTOHUB_PING_TIMEOUT. The watchdog calls
    it on its own thread; no locks.

    Args:
        probe: sends a probe on a connection without waiting (the send thread writes it).
        log: where decisions are logged.
        local_address: :func:`local_address_towards`, or a stand-in in tests.
    """

    def __init__(self, *, probe: Callable[["Connection"], None], log: logging.LoggerAdapter,
                 local_address: Callable[[tuple], Optional[str]] = local_address_towards) -> None:
        self._probe = probe
        self._log = log
        self._local_address = local_address
        self._probing: Optional[tuple["Connection", float, str]] = None  # (connection, since, why)
        #: The hub's (or the proxy's) socket address on the last connection that opened, and the local
        #: address the system used or would use towards it when last looked at.
        self._peer: Optional[tuple] = None
        self._route: Optional[str] = None

    @property
    def due(self) -> Optional[float]:
        """When the probe under way is judged (monotonic), or None."""
        return None if self._probing is None else self._probing[1] + PROBE_TIMEOUT

    def start(self, conn: "Connection", now: float, why: str) -> bool:
        """Probe ``conn`` because of ``why``; False if it cannot be (not open yet: the caller ends it)."""
        if conn.opened_at is None or conn.closing_since is not None or conn.dialect is None:
            self._log.info("%s while the connection was opening: connecting again now", why)
            return False
        if self._probing is not None and self._probing[0] is conn:
            return True  # one probe at a time answers for every cause
        self._log.info("%s: checking the connection to the hub (an answer within %g s keeps it)", why, PROBE_TIMEOUT)
        self._probing = (conn, now, why)
        self._probe(conn)
        return True

    def dead(self, conn: "Connection", now: float) -> bool:
        """(An open connection, at each look.) Probe it if the route changed; True once a probe failed
        (or the route changed before the handshake ended): the caller ends the connection."""
        if self._route_changed(conn, now):
            return True
        if self._probing is None:
            return False
        probed, since, why = self._probing
        if probed is not conn:
            self._probing = None
            return False
        if conn.last_pong >= since:
            self._probing = None
            self._log.info("the hub answered: the connection is fine")
            return False
        if now - since < PROBE_TIMEOUT:
            return False
        self._probing = None
        self._log.info("no answer from the hub within %g s after %s: the path is dead; connecting again now",
                       PROBE_TIMEOUT, why)
        return True

    def new_route(self) -> bool:
        """(Between connections.) Whether a new way to the last hub appeared since the last look."""
        if self._peer is None:
            return False
        current = self._local_address(self._peer)
        if current == self._route:
            return False
        was, self._route = self._route, current
        if current is None:
            return False
        self._log.info("the local address towards the hub changed (%s -> %s): connecting again now", was, current)
        return True

    def _route_changed(self, conn: "Connection", now: float) -> bool:
        """Probe ``conn`` if the local address towards its peer changed; True if it cannot be probed."""
        peer, local = conn.peer_address, conn.local_address
        if peer is None or local is None:
            return False
        if peer is not self._peer:  # a new connection: the address it uses is the one in use
            self._peer, self._route = peer, str(local[0])
        current = self._local_address(peer)
        if current == self._route:
            return False
        was, self._route = self._route, current
        return not self.start(conn, now, f"the local address towards the hub changed ({was} -> {current or 'no route'})")
