"""Misbehaving WebSocket servers on 127.0.0.1, written on raw sockets (no library would misbehave so).

:class:`FrameAttack` completes the WebSocket handshake and then runs an attack on the first
``attacks`` connections (a frame declaring 2 GiB, a flood of continuation frames, ...), recording
the close code the node answered with; later connections are relayed to a real hub, so that a
test sees the node serve on after the attack. :class:`DripServer` accepts, then sends its answer
(an HTTP response or the WebSocket 101) one byte at a time, every ``every`` seconds.
"""
from __future__ import annotations

import base64
import hashlib
import select
import socket
import struct
import threading
import time
from typing import Callable, Optional

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
GIB = 2**30


def header(opcode: int, length: int, *, fin: bool = True) -> bytes:
    """An unmasked server frame's header declaring ``length`` bytes."""
    b1 = (0x80 if fin else 0) | opcode
    if length < 126:
        return struct.pack("!BB", b1, length)
    if length < 2**16:
        return struct.pack("!BBH", b1, 126, length)
    return struct.pack("!BBQ", b1, 127, length)


def declare(length: int, send: int, chunk: int = 1 << 16) -> Callable[[socket.socket], None]:
    """An attack: one text frame declaring ``length`` bytes, then up to ``send`` bytes of it."""
    def attack(sock: socket.socket) -> None:
        sock.sendall(header(0x1, length))
        block = b"x" * chunk
        sent = 0
        while sent < send:
            sock.sendall(block[: min(chunk, send - sent)])
            sent += chunk
    return attack


def fragments(size: int, total: int) -> Callable[[socket.socket], None]:
    """An attack: a text frame without FIN, then continuation frames of ``size`` bytes, ``total`` in all."""
    def attack(sock: socket.socket) -> None:
        block = b"y" * size
        sock.sendall(header(0x1, size, fin=False) + block)
        sent = size
        while sent < total:
            sock.sendall(header(0x0, size, fin=False) + block)
            sent += size
    return attack


def accept_each(listener: socket.socket, take: Callable[[socket.socket], None]) -> None:
    """Hand every connection ``listener`` accepts to ``take``, until the listener is closed."""
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        take(client)


def _read_request(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("closed during the handshake")
        head += data
    return head


def handshake_answer(request: bytes) -> bytes:
    """The 101 answer to a WebSocket upgrade ``request``."""
    key = ""
    for line in request.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "sec-websocket-key":
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode()


def close_code_in(data: bytes) -> Optional[int]:
    """The code of the first close frame among the node's (masked) frames in ``data``, else None."""
    at = 0
    while at + 2 <= len(data):
        b1, b2 = data[at], data[at + 1]
        length, at = b2 & 0x7F, at + 2
        if length == 126:
            length, at = struct.unpack("!H", data[at:at + 2])[0], at + 2
        elif length == 127:
            length, at = struct.unpack("!Q", data[at:at + 8])[0], at + 8
        mask = data[at:at + 4] if b2 & 0x80 else b"\0\0\0\0"
        at += 4 if b2 & 0x80 else 0
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(data[at:at + length]))
        at += length
        if b1 & 0x0F == 0x8 and len(payload) >= 2:
            return int.from_bytes(payload[:2], "big")
    return None


class FrameAttack:
    """Attacks the first ``attacks`` connections on 127.0.0.1:<port>; relays later ones to ``upstream_port``.

    Attributes:
        close_codes: the close code each attacked connection got from the node (None: none came).
        ended: set when every attacked connection has ended.
    """

    def __init__(self, upstream_port: int, attack: Callable[[socket.socket], None], attacks: int = 1,
                 *, reads: bool = True) -> None:
        self._upstream = upstream_port
        self._reads = reads  # False: the attacked connection never reads what the node writes
        self._attack = attack
        self._left = attacks
        self.close_codes: list[Optional[int]] = []
        self.ended = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="attack-accept", daemon=True).start()

    def __enter__(self) -> "FrameAttack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._listener.close()
        for sock in list(self._sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        accept_each(self._listener, self._take)

    def _take(self, client: socket.socket) -> None:
        self._sockets.append(client)
        if self._left > 0:
            self._left -= 1
            target = self._attacked
        else:
            target = self._relay
        threading.Thread(target=target, args=(client,), name="attack-conn", daemon=True).start()

    def _attacked(self, sock: socket.socket) -> None:
        got = bytearray()
        try:
            sock.sendall(handshake_answer(_read_request(sock)))
            reader = threading.Thread(target=self._collect, args=(sock, got), name="attack-read", daemon=True)
            if self._reads:
                reader.start()
            try:
                self._attack(sock)
            except OSError:
                pass  # the node ended the connection: the point of the attack
            if self._reads:
                reader.join(10)
        except OSError:
            pass
        finally:
            self.close_codes.append(close_code_in(bytes(got)))
            sock.close()
            if self._left == 0:
                self.ended.set()

    @staticmethod
    def _collect(sock: socket.socket, got: bytearray) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            got += data

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self._upstream), timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._sockets.append(upstream)

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pipe, args=(client, upstream), name="attack-relay", daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, client), name="attack-relay", daemon=True).start()


class DripServer:
    """Accepts on 127.0.0.1:<port>, reads the request, then sends ``answer`` one byte every ``every`` s.

    ``read`` takes the request (by default an HTTP request's head); ``answer`` makes the answer of it.

    Attributes:
        held: for each connection, how long it stayed open (seconds), once it ended.
    """

    def __init__(self, answer: Callable[[bytes], bytes], every: float, *, limit: float = 60.0,
                 read: Callable[[socket.socket], bytes] = _read_request) -> None:
        self._read = read
        self._answer = answer
        self._every = every
        self._limit = limit
        self.held: list[float] = []
        self.accepted = threading.Event()
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name="drip-accept", daemon=True).start()

    def __enter__(self) -> "DripServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._listener.close()

    def _accept(self) -> None:
        accept_each(self._listener, self._take)

    def _take(self, client: socket.socket) -> None:
        self.accepted.set()
        threading.Thread(target=self._drip, args=(client,), name="drip-conn", daemon=True).start()

    def _drip(self, sock: socket.socket) -> None:
        started = time.monotonic()
        try:
            answer = self._answer(self._read(sock))
            for i in range(len(answer)):
                sock.sendall(answer[i:i + 1])
                if self._node_closed(sock) or self._closing.is_set() or time.monotonic() - started > self._limit:
                    break
        except OSError:
            pass
        finally:
            self.held.append(time.monotonic() - started)
            sock.close()

    def _node_closed(self, sock: socket.socket) -> bool:
        """Wait ``every`` seconds, or less if the node closes its end (True then)."""
        readable, _, _ = select.select([sock], [], [], self._every)
        if not readable:
            return False
        try:
            return not sock.recv(65536)
        except OSError:
            return True


def api_answer(ws_url: str) -> Callable[[bytes], bytes]:
    """An API server's whole answer handing out ``ws_url`` (for :class:`DripServer`)."""
    def answer(request: bytes) -> bytes:
        body = ('{"errcode": 0, "errmsg": "success", "data": {"wsUrl": "%s"}}' % ws_url).encode()
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)
    return answer


def socks5_answer(request: bytes) -> bytes:
    """A SOCKS5 proxy's answers: no authentication, then "connected" (for :class:`DripServer`)."""
    return b"\x05\x00" + b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x50"
