"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``) with the standard library.

:class:`NotifySocket` is the transport: datagrams to ``$NOTIFY_SOCKET`` (an ``AF_UNIX`` path, or
an abstract address written with a leading ``@``), and the watchdog interval systemd asked for.
:class:`SystemdNotifier` decides what to say, and when:

- ``READY=1`` once, after the first ``node_ready`` (the unit counts as started from then on);
  until then ``EXTEND_TIMEOUT_USEC=`` while the node is alive, so that a hub outage at boot
  does not make systemd kill a node that is doing the right thing (retrying);
- ``WATCHDOG=1`` every half ``WatchdogSec=``, only while the node is alive
  (:func:`~octohub_sync._ops.liveness.liveness`): a wedged process misses it and systemd restarts it;
- ``STATUS=`` with the state and counts, on a change (at most every :data:`STATUS_EVERY` s);
- ``STOPPING=1`` when the node starts to stop.

The library never talks to systemd by itself: the program (``octohub-node``) passes a
:class:`NotifySocket` to the client, which builds this notifier and calls it from its
watchdog thread; an application embedding a node decides for itself.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from typing import Any, Callable, Mapping, Optional

from ._ops.liveness import Verdict

__all__ = ["NotifySocket", "SystemdNotifier", "status_text"]

logger = logging.getLogger(__name__)

#: Before READY=1, extend systemd's start timeout by this much (s) ...
EXTEND_BY = 30.0
#: ... every this many seconds, while the node is alive.
EXTEND_EVERY = 10.0
#: Shortest time between two STATUS= lines (s): counts change with every task.
STATUS_EVERY = 2.0


def _unix_datagram_socket() -> socket.socket:
    if sys.platform == "win32":  # NotifySocket.from_environ() says so and returns None before this
        raise OSError("systemd's notify socket is an AF_UNIX datagram socket: Windows has none")
    return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


class NotifySocket:
    """Datagrams to systemd's notify socket.

    Args:
        address: ``$NOTIFY_SOCKET``: a path, or ``@name`` for an abstract address.
        watchdog_interval: seconds between ``WATCHDOG=1`` pings (half ``WatchdogSec=``), or None.
    """

    def __init__(self, address: str, *, watchdog_interval: Optional[float] = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_interval
        self._target = "\0" + address[1:] if address.startswith("@") else address
        self._sock = _unix_datagram_socket()
        self._sock.setblocking(False)  # systemd reads at once; a full queue must not block a node thread
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: Optional[Mapping[str, str]] = None,
                     pid: Optional[int] = None) -> Optional["NotifySocket"]:
        """The socket systemd gave this process, or None (not under systemd, or not ``Type=notify``).

        ``WATCHDOG_USEC`` sets the watchdog interval (half of it), unless ``WATCHDOG_PID``
        names another process (the watchdog is then not ours to feed).
        """
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        if not address.startswith(("/", "@")):
            if address:
                logger.debug("NOTIFY_SOCKET=%r is not an AF_UNIX address; not notifying systemd", address)
            return None
        if not hasattr(socket, "AF_UNIX"):  # Windows: a NOTIFY_SOCKET there is not systemd's
            logger.debug("NOTIFY_SOCKET=%r set, but this platform has no AF_UNIX sockets; not notifying", address)
            return None
        return cls(address, watchdog_interval=_watchdog_interval(environ, os.getpid() if pid is None else pid))

    def send(self, message: str) -> bool:
        """Send one notification (``KEY=value`` lines); False if it could not be sent (logged at DEBUG)."""
        try:
            with self._lock:
                self._sock.sendto(message.encode("utf-8"), self._target)
            return True
        except OSError as exc:
            logger.debug("could not notify systemd (%s): %s", self.address, exc)
            return False

    def close(self) -> None:
        self._sock.close()


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> Optional[float]:
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        owner = int(environ.get("WATCHDOG_PID") or pid)
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 and owner == pid else None


def status_text(stats: Mapping[str, Any]) -> str:
    """The ``STATUS=`` line: state and counts, as ``systemctl status`` shows it."""
    return (f"{stats['state']}; tasks completed {stats['tasks_completed']}, failed {stats['tasks_failed']}, "
            f"rejected {stats['tasks_rejected']}, running {stats['tasks_running']}, queued {stats['tasks_queued']}; "
            f"outbox {stats['outbox']}; reconnects {stats['reconnects']}")


class SystemdNotifier:
    """What the node tells systemd, and when (see the module's docstring).

    Args:
        send: sends one notification (:meth:`NotifySocket.send`).
        alive: the node's liveness (its loops tick, it has not stopped).
        stats: the node's ``stats()`` snapshot, for ``STATUS=``.
        watchdog_interval: seconds between ``WATCHDOG=1`` pings; None: no watchdog.
    """

    def __init__(self, *, send: Callable[[str], object], alive: Callable[[], Verdict],
                 stats: Callable[[], Mapping[str, Any]], watchdog_interval: Optional[float],
                 log: logging.LoggerAdapter) -> None:
        self._send = send
        self._alive = alive
        self._stats = stats
        self._interval = watchdog_interval
        self._log = log
        self._lock = threading.Lock()  # ready() runs on a connection thread, tick() on the watchdog's
        self._ready = False
        self._stopping = False
        self._next_ping = 0.0
        self._next_extend = 0.0
        self._withheld = False  # the last ping was withheld: log once per episode
        self._status = ""
        self._status_at = float("-inf")  # when STATUS= last went out (the watchdog loop's clock)

    def ready(self) -> None:
        """``node_ready`` went out: the first time, tell systemd the node has started."""
        with self._lock:
            if self._ready or self._stopping:
                return
            self._ready = True
            self._status = status_text(self._stats())
            self._send(f"READY=1\nSTATUS={self._status}")
        self._log.info("told systemd the node is ready")

    def stopping(self) -> None:
        """The node started to stop (drain): no more pings, ``STOPPING=1``."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._send("STOPPING=1\nSTATUS=stopping: draining running tasks")

    def tick(self, now: float) -> None:
        """Called by the watchdog loop (every 0.25 s at most): ping, extend or report as due."""
        with self._lock:
            if self._stopping:
                return
            if not self._ready:
                if now >= self._next_extend and self._alive().ok:
                    self._send(f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY * 1e6)}")
                    self._next_extend = now + EXTEND_EVERY
            elif self._interval is not None and now >= self._next_ping:
                self._ping(now)
            status = status_text(self._stats())
            if status != self._status and now - self._status_at >= STATUS_EVERY:
                self._status, self._status_at = status, now
                self._send(f"STATUS={status}")

    def _ping(self, now: float) -> None:
        verdict = self._alive()
        if verdict.ok:
            self._send("WATCHDOG=1")
            self._next_ping = now + (self._interval or 0.0)
            if self._withheld:
                self._log.warning("alive again: sending WATCHDOG=1 to systemd again")
                self._withheld = False
        elif not self._withheld:
            self._withheld = True
            self._log.error("not alive (%s): no WATCHDOG=1 to systemd, which restarts the node after WatchdogSec",
                            verdict.reason)
