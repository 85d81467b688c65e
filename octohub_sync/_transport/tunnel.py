"""The WebSocket's socket: TCP, through an HTTP CONNECT or SOCKS5 proxy if one is in use, then TLS.

The node opens this socket itself and hands it to websocket-client, so that one deadline,
OCTOHUB_CONNECT_TIMEOUT, bounds every step: the TCP connect, the proxy's handshake, TLS, and
(with the timeout left on the socket) the WebSocket upgrade. Each step gets what is left.
"""
from __future__ import annotations

import base64
import socket
import ssl
import struct
import sys
import time
from typing import Optional
from urllib.parse import urlsplit

from .._config.proxies import Proxy, refusal_hint
from .._wire.addresses import host_for_url, port_of
from ..exceptions import ProxyError

__all__ = ["Deadline", "bound_writes", "open_socket", "tunnel_hint"]

#: The longest CONNECT answer (status line and headers) read from a proxy, in bytes.
MAX_CONNECT_ANSWER = 16 * 1024


class Deadline:
    """A point in ``time.monotonic()`` time; :meth:`left` is the timeout for the next step."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left.

        Raises:
            socket.timeout: none is left.
        """
        left = self._end - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        return left

    def add(self, sock: socket.socket) -> None:
        """A socket of the steps this deadline bounds; this one leaves it to each step's timeout
        (an attempt's deadline also cuts it when it passes: connect_deadline.py)."""


def open_socket(url: str, *, proxy: Optional[Proxy], ssl_context: Optional[ssl.SSLContext],
                timeout: float, deadline: Optional[Deadline] = None) -> socket.socket:
    """A connected socket for the ``ws://`` or ``wss://`` ``url``, ready for the WebSocket upgrade.

    Args:
        url: the WebSocket address.
        proxy: the proxy to tunnel through, or None to connect directly.
        ssl_context: for ``wss`` (default: the system's CAs).
        timeout: OCTOHUB_CONNECT_TIMEOUT; the socket keeps what is left of it.
        deadline: the attempt's, when it began before this call (the API request took part of it).

    Raises:
        ProxyError: the proxy refused or could not be reached.
        socket.timeout: a step did not finish in time (the message names it).
        OSError, ssl.SSLError: the connection or TLS failed.
    """
    deadline = Deadline(timeout) if deadline is None else deadline
    parts = urlsplit(url)
    host, port = parts.hostname or "", port_of(parts)
    step = f"connecting to {host_for_url(host)}:{port}"
    sock: Optional[socket.socket] = None
    try:
        if proxy is None:
            sock = socket.create_connection((host, port), timeout=deadline.left())
            deadline.add(sock)
        else:
            step = f"connecting through the proxy {proxy}"
            sock = _through_proxy(proxy, host, port, deadline)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if parts.scheme == "wss":
            step = f"the TLS handshake with {host}"
            sock.settimeout(deadline.left())
            sock = (ssl_context or ssl.create_default_context()).wrap_socket(
                sock, server_hostname=host, do_handshake_on_connect=False)
            deadline.add(sock)  # before the handshake: the wrapped socket took the descriptor over
            sock.do_handshake()
        step = "the WebSocket handshake"
        sock.settimeout(deadline.left())
    except BaseException as exc:
        _close(sock)
        # An attempt's deadline that passed cut the socket: whatever the step then raised, time is what failed.
        if isinstance(exc, socket.timeout) or getattr(deadline, "expired", False):
            limit = f"OCTOHUB_CONNECT_TIMEOUT ({deadline.seconds:g} s)"
            raise socket.timeout(f"{step} did not finish within {limit}") from None
        raise
    return sock


def bound_writes(sock: socket.socket, seconds: float) -> bool:
    """After the handshakes: a write that cannot go on for ``seconds`` fails; reads wait as long as they must.

    On a plain TCP socket the kernel bounds each write (``SO_SNDTIMEO``: a stalled ``send``
    fails with EAGAIN, or WSAETIMEDOUT on Windows) and the socket is otherwise blocking, so
    that a read costs one system call, not a ``poll`` and a read (two releases of the GIL,
    each a chance to wait for it behind every busy worker thread). The node judges a silent
    path by its pongs (_node/watchdog.py), not by a read's timeout. A TLS socket, or one whose
    platform refuses the option, keeps Python's timeout on both, as before (``ssl`` retries a
    write that the kernel's timeout interrupted, so the option is not relied on there).

    Returns:
        True if the kernel bounds the writes (reads are blocking), False if Python's timeout does.
    """
    if not isinstance(sock, ssl.SSLSocket) and hasattr(socket, "SO_SNDTIMEO"):
        if sys.platform == "win32":
            value = struct.pack("=I", max(1, int(seconds * 1000)))  # a DWORD of milliseconds
        else:
            value = struct.pack("@ll", int(seconds), int(seconds % 1 * 1_000_000))  # a struct timeval
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        except (OSError, struct.error):
            pass
        else:
            sock.settimeout(None)
            return True
    sock.settimeout(seconds)
    return False


def _through_proxy(proxy: Proxy, host: str, port: int, deadline: Deadline) -> socket.socket:
    if proxy.scheme == "http":
        try:
            sock = socket.create_connection((proxy.host, proxy.port), timeout=deadline.left())
        except socket.timeout:
            raise
        except OSError as exc:
            raise _unreachable(proxy, exc) from None
        deadline.add(sock)
        try:
            _http_connect(sock, proxy, host, port, deadline)
        except BaseException:
            sock.close()
            raise
        return sock
    return _socks5(proxy, host, port, deadline)


def _http_connect(sock: socket.socket, proxy: Proxy, host: str, port: int, deadline: Deadline) -> None:
    """Ask an HTTP proxy for a tunnel (RFC 9110 §9.3.6) and read its answer, not a byte more."""
    target = f"{host_for_url(host)}:{port}"
    request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if proxy.username is not None:
        token = base64.b64encode(f"{proxy.username}:{proxy.password or ''}".encode()).decode("ascii")
        request += f"Proxy-Authorization: Basic {token}\r\n"
    sock.settimeout(deadline.left())
    sock.sendall((request + "\r\n").encode())
    status, reason = _read_status(sock, deadline, proxy)
    if 200 <= status < 300:
        return
    what = f"the proxy {proxy} refused the tunnel to {target}: HTTP {status} {reason}".rstrip()
    raise ProxyError(what, status=status, hint=refusal_hint(proxy) if status == 407 else tunnel_hint(port))


def tunnel_hint(port: int) -> str:
    """What to check when an HTTP proxy would not open a tunnel for another reason than credentials."""
    return (f"the proxy may not reach the hub, or not allow CONNECT to port {port} (a proxy that allows only "
            "443 needs wss); hosts it must not carry go in NO_PROXY")


def _read_status(sock: socket.socket, deadline: Deadline, proxy: Proxy) -> tuple[int, str]:
    # Peek, then take exactly up to the blank line: what follows belongs to the tunnel (TLS, WebSocket).
    head = b""
    while b"\r\n\r\n" not in head:
        if len(head) > MAX_CONNECT_ANSWER:
            raise ProxyError(f"the proxy {proxy} sent an over-long answer to CONNECT")
        sock.settimeout(deadline.left())
        seen = sock.recv(4096, socket.MSG_PEEK)
        if not seen:
            raise ProxyError(f"the proxy {proxy} closed the connection without answering CONNECT")
        end = (head + seen).find(b"\r\n\r\n")
        head += sock.recv(len(seen) if end < 0 else end + 4 - len(head))
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise ProxyError(f"the proxy {proxy} answered CONNECT with something that is not HTTP")
    return int(code), "".join(c for c in reason if c.isprintable())[:100]


def _socks5(proxy: Proxy, host: str, port: int, deadline: Deadline) -> socket.socket:
    # The socks extra is optional: config checked it is installed before a SOCKS proxy got this far.
    from python_socks import ProxyConnectionError, ProxyError as SocksError, ProxyTimeoutError, ProxyType
    from python_socks.sync import Proxy as SocksProxy

    user = proxy.username
    client = SocksProxy(ProxyType.SOCKS5, proxy.host, proxy.port, username=user,
                        password=None if user is None else proxy.password or "",
                        rdns=proxy.scheme == "socks5h")  # socks5h: the proxy resolves the name
    try:
        return client.connect(host, port, timeout=deadline.left())
    except ProxyTimeoutError:
        raise socket.timeout("timed out") from None
    except ProxyConnectionError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        if isinstance(cause, socket.timeout):
            raise socket.timeout("timed out") from None
        raise _unreachable(proxy, cause) from None
    except SocksError as exc:
        raise ProxyError(f"the SOCKS5 proxy {proxy} refused the connection to {host_for_url(host)}:{port}: "
                         f"{exc or 'it closed the connection'}", hint=refusal_hint(proxy)) from None


def _unreachable(proxy: Proxy, exc: OSError) -> ProxyError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return ProxyError(f"cannot reach the proxy {proxy}: {reason}",
                      hint=f"check the proxy's address in {proxy.source} and that it runs")


def _close(sock: Optional[socket.socket]) -> None:
    if sock is not None:
        sock.close()
