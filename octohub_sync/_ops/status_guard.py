"""What the metrics server lets in: a few connections at once, each with a deadline for its
request, and only ``Host:`` names a web page cannot borrow.

Without these, 1,100 idle local connections took a thread and a descriptor each until the node's
1,024 file descriptors were gone (``/healthz`` went quiet and reconnecting failed), a client
sending a byte every few seconds held its thread for ever, and a web page that rebinds its own
DNS name to 127.0.0.1 could read ``/tasks`` (its keys can be account e-mails).
"""
from __future__ import annotations

import io
import ipaddress
import socket
import threading
import time
from collections import OrderedDict
from typing import Any, Optional

__all__ = ["DeadlineReader", "MAX_CONNECTIONS", "Slots", "allowed_host"]

#: Connections served at once; the pages are small and quick, so a scraper or two never needs more.
MAX_CONNECTIONS = 16

_WILDCARDS = {"", "0.0.0.0", "::"}


class Slots:
    """At most ``size`` connections at once, whatever clients do.

    When every slot is taken, the connection that has waited longest for its request is dropped
    to make room: an idle connection costs its opener nothing, while a scraper sends its request
    as soon as it connects. Only when every slot is answering a request is the newcomer turned away.
    """

    def __init__(self, size: int = MAX_CONNECTIONS) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._reading: "OrderedDict[socket.socket, None]" = OrderedDict()  # oldest first
        self._answering: set[socket.socket] = set()

    def take(self, sock: socket.socket) -> bool:
        """Give ``sock`` a slot, dropping the oldest connection still without a request if needed."""
        with self._lock:
            if len(self._reading) + len(self._answering) >= self._size:
                if not self._reading:
                    return False
                oldest, _ = self._reading.popitem(last=False)
                _drop(oldest)
            self._reading[sock] = None
            return True

    def answering(self, sock: socket.socket) -> None:
        """``sock`` sent its whole request: no newcomer may drop it now."""
        with self._lock:
            if sock in self._reading:  # not dropped meanwhile
                del self._reading[sock]
                self._answering.add(sock)

    def release(self, sock: socket.socket) -> None:
        """``sock`` is done with (answered, timed out or dropped)."""
        with self._lock:
            self._reading.pop(sock, None)
            self._answering.discard(sock)

    def __len__(self) -> int:
        with self._lock:
            return len(self._reading) + len(self._answering)


def _drop(sock: socket.socket) -> None:
    # shutdown, not close: the connection's own thread is reading it and closes it when its read
    # returns; closing here could hand the descriptor number to another socket under that thread.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class DeadlineReader(io.RawIOBase):
    """Reads a socket until a deadline for the whole request, not for each read.

    A socket timeout alone restarts with every byte: a client sending one byte every few
    seconds would hold its connection for as long as it liked.
    """

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = time.monotonic() + seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the request took longer than its deadline")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


def allowed_host(values: Optional[list], bind_host: str, machine: str = "") -> bool:
    """Whether a request with these ``Host:`` header values may be answered.

    Allowed: loopback (``localhost``, 127.0.0.0/8, ``[::1]``) and the address the server is bound
    to, with or without a port; with a wildcard bind (``0.0.0.0``, ``::``) also any IP address and
    this machine's host name. A page that rebinds its own DNS name to reach the node sends that
    name, never an address nor the node's own name; a request without ``Host:`` comes from no browser.

    Args:
        values: every ``Host:`` header of the request (``None`` or empty: none was sent).
        bind_host: ``OCTOHUB_METRICS_HOST``.
        machine: this machine's host name (``socket.gethostname()``), for a wildcard bind.
    """
    if not values:
        return True
    if len(values) > 1:
        return False
    host = _host_part(str(values[0]).strip()).lower().rstrip(".")
    bound = bind_host.strip("[]").lower().rstrip(".")
    wildcard = bound in _WILDCARDS
    if host in ("localhost", bound) or (wildcard and machine and host == machine.lower()):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or wildcard


def _host_part(value: str) -> str:
    """``host`` of ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value
