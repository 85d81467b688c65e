"""One deadline for a whole connect attempt: the API request, TCP, the proxy, TLS and the WebSocket handshake.

A socket's timeout bounds one read, not a sequence of them: a server that sends its answer a
byte every few seconds (the HTTP headers, or the WebSocket's 101 and its headers, which
websocket-client reads line by line) held an attempt for as long as it liked. So each attempt
arms an :class:`AttemptDeadline` of OCTOHUB_CONNECT_TIMEOUT: every socket the attempt uses is
registered with it (the WebSocket's by connection.py, the API request's by the requests session
of :func:`deadline_session`), and once the deadline passes, a timer shuts them down, which ends
any read or write blocked on them at once. Only a name resolution cannot be cut short; readiness
says when an attempt runs past its deadline (_ops/liveness.py).
"""
from __future__ import annotations

import functools
import socket
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Optional

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool

from .tunnel import Deadline

__all__ = ["AttemptDeadline", "current_attempt", "deadline_session"]

_current = threading.local()


class AttemptDeadline(Deadline):
    """The deadline of one connect attempt and the sockets it cuts when it passes.

    As a :class:`~octohub_sync._transport.tunnel.Deadline`, it gives each step of ``open_socket`` what is left.

    Args:
        seconds: OCTOHUB_CONNECT_TIMEOUT.
        name: the timer thread's name (``octohub-deadline-N``).
    """

    def __init__(self, seconds: float, *, name: str) -> None:
        super().__init__(seconds)
        self.started = time.monotonic()
        #: The deadline passed before the attempt finished connecting: its sockets were shut down.
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._finished = False
        # Daemon: it only waits and shuts sockets down; finish() ends it as soon as the attempt connected or failed.
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.name = name
        self._timer.daemon = True
        self._timer.start()

    @property
    def connecting(self) -> bool:
        """The attempt has neither connected nor failed yet."""
        return not self._finished

    def add(self, sock: socket.socket) -> None:
        """Cut ``sock`` too when the deadline passes (at once if it passed already)."""
        with self._lock:
            if self._finished:
                return
            if not self.expired:
                self._sockets.append(sock)
                return
        _shut(sock)

    def finish(self) -> None:
        """The attempt connected or failed: nothing is cut from now on, and the timer's thread has ended."""
        with self._lock:
            self._finished = True
            self._sockets.clear()
        self._timer.cancel()
        if self._timer is not threading.current_thread():
            self._timer.join(1.0)  # wakes at once: no thread of an attempt outlives it (stop() leaves none)

    def cut(self) -> None:
        """The attempt is being abandoned: shut its sockets down now (nothing, once it connected or failed)."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    @contextmanager
    def current(self) -> Iterator["AttemptDeadline"]:
        """While inside, the requests of :func:`deadline_session` on this thread register their sockets here."""
        _current.attempt = self
        try:
            yield self
        finally:
            _current.attempt = None


def current_attempt() -> Optional[AttemptDeadline]:
    """The attempt running on this thread (:meth:`AttemptDeadline.current`), if any."""
    return getattr(_current, "attempt", None)


def _shut(sock: Any) -> None:
    # shutdown, not close: it wakes a read blocked in another thread, and the owner still closes the descriptor.
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass


def deadline_session() -> requests.Session:
    """A requests session whose sockets are cut with the current attempt's deadline."""
    session = requests.Session()
    adapter = _DeadlineAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter, its connection pools (direct, HTTP proxy, SOCKS) making connections that register."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _watch(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _watch(manager)
        return manager


def _watch(manager: Any) -> None:
    # The attribute exists in urllib3 1.26 and 2.x, for PoolManager, ProxyManager and SOCKSProxyManager.
    pools = manager.pool_classes_by_scheme
    manager.pool_classes_by_scheme = {scheme: _watched_pool(cls) for scheme, cls in pools.items()}


if TYPE_CHECKING:
    # What _Watching is mixed into: urllib3's HTTP, HTTPS or SOCKS connection, all HTTPConnections.
    from urllib3.connection import HTTPConnection as _Connection
else:
    _Connection = object


class _Watching(_Connection):
    """Registers each socket of a urllib3 connection with the attempt's deadline (mixed in before the class)."""

    def _new_conn(self) -> Any:
        # A new socket: registered before the proxy's or TLS's handshake, which urllib3 runs on it next.
        sock = super()._new_conn()
        _register(sock)
        return sock

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _register(getattr(self, "sock", None))  # a kept-alive connection of an earlier attempt
        return super().getresponse(*args, **kwargs)


@functools.lru_cache(maxsize=None)
def _watched_pool(pool_cls: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    if getattr(pool_cls, "_octohub_watched", False):
        return pool_cls
    # The connection class is known only at run time (the pool's): the mixin goes in front of it.
    base = pool_cls.ConnectionCls
    watched = type(f"Watched{base.__name__}", (_Watching, base), {})
    return type(f"Watched{pool_cls.__name__}", (pool_cls,), {"ConnectionCls": watched, "_octohub_watched": True})


def _register(sock: Optional[socket.socket]) -> None:
    attempt = current_attempt()
    if attempt is not None and sock is not None:
        attempt.add(sock)
