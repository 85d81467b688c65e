"""The hub's WebSocket endpoint ``/ws/node``, behaving like the Go server of docs/protocol.md §2-§5.

Built on ``websockets.sync.server``; its accept loop is replaced by one that
starts named daemon threads, because a test hub must never keep a process alive.
That loop uses only ``Server.socket`` and ``Server.handler``, which websockets 13-17
all have (websockets 15 is the newest for Python 3.9); its wake-up pair and thread
bookkeeping are its own.

Why one module: the connection class and the server share the bookkeeping of live connections
(track, untrack, stop and the go dialect's panic act on the same set).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import selectors
import socket
import ssl
import threading
import time
import uuid
from typing import Any, Callable, Optional, cast
from urllib.parse import parse_qsl, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.sync.server import Server, ServerConnection, serve

from octohub_sync._wire import signing
from octohub_sync.hub import messages
from octohub_sync.hub.go_writer import GoWriter
from octohub_sync.hub.sockets import abort
from octohub_sync.hub.state import HubState

logger = logging.getLogger(__name__)

#: Seconds a client gets for the TLS and WebSocket opening handshakes.
OPEN_TIMEOUT = 5.0
#: Seconds a clean close handshake may take before the socket is just closed.
CLOSE_TIMEOUT = 2.0


_wire_logger = logging.getLogger(__name__ + ".websockets")
# websockets logs request lines at debug level; they carry ``signature=``.
_wire_logger.addFilter(signing.RedactingFilter())


class HubConnection(ServerConnection):
    """A server connection that remembers its last ping frame, for the Go read deadline.

    Two test hooks act on the node's frames as the reader thread parses them, before websockets
    answers them: ``at_close`` holds text frames sent the moment the node's close frame arrives,
    ahead of the hub's own close frame (tasks the hub believes delivered while the node closes),
    which follows ``close_delay`` seconds later (the reader waits meanwhile, as behind a slow
    link); the next ``pongs_to_skip`` ping frames whose payload starts with ``skip_prefix`` get
    no pong (a peer may answer only the latest of several pings, RFC 6455 §5.5.3; or a pong lost
    on the way).

    In the go dialect the hub writes as the Go server does (go_writer.py): through a queue that drops
    what finds it full, and a ping frame from the node that meets a write under way ends the whole
    WebSocket server (``ping_crash``), as the original's unrecovered panic does.
    """

    def __init__(self, server_side: WsServer, *args: Any, **kwargs: Any) -> None:
        self.last_ping = time.monotonic()
        self.pc_id = ""
        self.at_close: list[str] = []
        self.close_delay = 0.0
        self.pongs_to_skip = 0
        self.skip_prefix = b""
        self._server_side = server_side
        # Registered before the reader thread starts, so close_socket() always finds it.
        server_side.track(self)
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            server_side.untrack(self)
            raise
        number = server_side.next_id()
        self.recv_events_thread.name = f"hub-ws-recv-{number}"
        #: The Go server's writer (go dialect), else None: messages go out directly.
        self.writer = GoWriter(super().send, name=f"hub-ws-write-{number}") if server_side.go else None
        self._recv_frame = self.protocol.recv_frame
        self.protocol.recv_frame = self._hooked_recv_frame  # type: ignore[method-assign]  # patches websockets: its reader has no hook

    def send(self, message: Any, *, text: Optional[bool] = None) -> None:
        """Send a message; in the go dialect, queue it for the writer (dropped if the queue is full)."""
        if self.writer is None or self.protocol.state is not State.OPEN or not isinstance(message, (str, bytes)):
            super().send(message, text=text)  # raises ConnectionClosed once the connection is gone
            return
        self.writer.put(message)

    def send_now(self, message: Any) -> None:
        """Send a message at once, ahead of the go dialect's queue."""
        super().send(message)

    def _hooked_recv_frame(self, frame: Frame) -> None:
        # On the reader thread, with the protocol's lock held: what is sent here goes out first.
        if self.writer is not None:
            self._server_side.count_frame(frame.opcode)
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self.writer.received()
            elif frame.opcode is Opcode.PING and self._server_side.ping_crash and self.writer.meets_write():
                self._server_side.panic(self, "concurrent write to websocket connection")
                return  # no pong: the process is gone
        if (frame.opcode is Opcode.PING and self.pongs_to_skip
                and frame.data[:len(self.skip_prefix)] == self.skip_prefix):
            self.pongs_to_skip -= 1
            self.protocol.events.append(frame)  # still seen by process_event (the read deadline)
            return
        if frame.opcode is Opcode.CLOSE and self.at_close and self.protocol.state is State.OPEN:
            frames, self.at_close = self.at_close, []
            for text in frames:
                self.protocol.send_text(text.encode())
            self.send_data()  # the tasks leave now; the close frame after the delay
            if self.close_delay:
                time.sleep(self.close_delay)  # the fault itself: a hub slow to answer, not a test's wait
        self._recv_frame(frame)

    def process_event(self, event: Any) -> None:
        super().process_event(event)
        # Only control frames extend the Go server's read deadline, JSON pings do not.
        if isinstance(event, Frame) and event.opcode in (Opcode.PING, Opcode.PONG):
            self.last_ping = time.monotonic()

    def close_socket(self) -> None:
        super().close_socket()
        writer = getattr(self, "writer", None)  # not set if __init__ failed before it
        if writer is not None:
            writer.close()
        self._server_side.untrack(self)


class WsServer:
    """Owns one websockets server at a time; can be stopped and restarted on the same port.

    Args:
        state: where connections are registered and frames recorded.
        key: the signature key of the WebSocket URL.
        dialect: ``"seed"`` or ``"go"``, the form of the ``connected`` message, and in the go dialect the
            Go server's way of writing (go_writer.py).
        clock: the hub's clock (signature checks, ``connected`` message).
        fault: returns the current ``ws_fault`` (None, ``"401"`` or ``"500"``).
        ssl_context: server-side TLS context (wss), or None.
        max_size: largest message accepted, in bytes (None: no limit).
        on_open: called after each new connection is registered (e.g. to re-plan a read deadline).
        ping_crash: in the go dialect, a ping frame that meets a write ends the server (go_writer.py).
    """

    def __init__(
        self,
        state: HubState,
        *,
        key: str,
        dialect: str,
        clock: Callable[[], float],
        fault: Callable[[], Optional[str]],
        ssl_context: Optional[ssl.SSLContext] = None,
        max_size: Optional[int] = None,
        on_open: Optional[Callable[[], None]] = None,
        ping_crash: bool = True,
    ) -> None:
        self._state = state
        self.go = dialect == messages.GO
        self.ping_crash = ping_crash
        self._key = key
        self._dialect = dialect
        self._clock = clock
        self._fault = fault
        self._ssl_context = ssl_context
        self._max_size = max_size
        self._on_open = on_open
        self._lock = threading.Lock()
        self._live: set[HubConnection] = set()
        self._ids = itertools.count(1)
        self._server: Optional[Server] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._handler_threads: set[threading.Thread] = set()
        self._wakeup: Optional[tuple[socket.socket, socket.socket]] = None

    def next_id(self) -> int:
        return next(self._ids)

    def count_frame(self, opcode: Opcode) -> None:
        """A frame of ``opcode`` arrived from a node (go dialect): counted in the hub's state."""
        self._state.count_frame(opcode.name.lower())

    def panic(self, connection: HubConnection, why: str) -> None:
        """End the WebSocket server as the Go server's unrecovered panic ends its process.

        Every connection is dropped without a close frame and the listener is closed until
        ``LocalHub.start_ws()``; the API server, a process of its own in the original, stays.
        Called on ``connection``'s reader thread, which must not join itself: another thread stops.
        """
        logger.error("panic: %s (the Go server's process ends here: every connection dropped, no listener)", why)
        self._state.record_crash(connection.pc_id, why)
        # Its reader holds the protocol's lock here, which close_socket() takes: only the socket is cut now.
        with contextlib.suppress(OSError):
            connection.socket.shutdown(socket.SHUT_RDWR)
        # Daemon: a test hub must never keep a process alive; stop() is bounded.
        threading.Thread(target=self.stop, args=(CLOSE_TIMEOUT * 2,), name="hub-ws-panic", daemon=True).start()

    def track(self, connection: HubConnection) -> None:
        with self._lock:
            self._live.add(connection)

    def untrack(self, connection: HubConnection) -> None:
        with self._lock:
            self._live.discard(connection)

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 = any free port) and return the bound port."""
        sock = socket.create_server((host, port))  # sets SO_REUSEADDR on POSIX
        bound_port = int(sock.getsockname()[1])  # read now: serve() detaches sock when it wraps it in TLS
        try:
            self._server = self._serve(sock)
        except BaseException:
            sock.close()
            raise
        # Our own wake-up pair: websockets' shutdown pipe changed form between versions (15 vs 17).
        self._wakeup = socket.socketpair()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(self._server, self._wakeup[0]), name="hub-ws-accept", daemon=True
        )
        self._accept_thread.start()
        return bound_port

    def _serve(self, sock: socket.socket) -> Server:
        return serve(
            self._handle,
            sock=sock,
            ssl=self._ssl_context,
            process_request=self._check_request,
            create_connection=self._connection_class(),
            compression=None,
            max_size=self._max_size,
            ping_interval=None,  # the Go server never pings: the node must
            open_timeout=OPEN_TIMEOUT,
            close_timeout=CLOSE_TIMEOUT,
            logger=_wire_logger,
        )

    def _connection_class(self) -> type[HubConnection]:
        # websockets makes each connection from a class, with its own arguments only: this one adds the server.
        server_side = self

        class Connection(HubConnection):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(server_side, *args, **kwargs)

        return Connection

    def stop(self, timeout: float) -> None:
        """Stop accepting, abort every connection, join the threads (bounded by ``timeout``)."""
        server, self._server = self._server, None
        if server is None:
            return
        deadline = time.monotonic() + timeout
        server.socket.close()
        _close_shutdown_pair(server)
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            with contextlib.suppress(OSError):  # the accept loop may already be gone
                wakeup[1].send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        if wakeup is not None:
            for end in wakeup:
                end.close()
        with self._lock:
            live = list(self._live)
            threads = list(self._handler_threads)
            self._handler_threads.clear()
        for connection in live:
            abort(connection)
        threads += [c.recv_events_thread for c in live if hasattr(c, "recv_events_thread")]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _accept_loop(self, server: Server, wakeup: socket.socket) -> None:
        poller = selectors.DefaultSelector()
        try:
            poller.register(wakeup, selectors.EVENT_READ)
            poller.register(server.socket, selectors.EVENT_READ)
            while True:
                poller.select()
                try:
                    sock, addr = server.socket.accept()
                except OSError:  # the listening socket was closed by stop()
                    break
                thread = threading.Thread(
                    target=server.handler,
                    args=(sock, addr),
                    name=f"hub-ws-conn-{self.next_id()}",
                    daemon=True,
                )
                # Registered before start, so stop() sees it.
                with self._lock:
                    self._handler_threads = {t for t in self._handler_threads if t.is_alive()}
                    self._handler_threads.add(thread)
                thread.start()
        except (OSError, ValueError):
            logger.debug("accept loop ended early", exc_info=True)
        finally:
            poller.close()

    def _check_request(self, connection: ServerConnection, request: Request) -> Optional[Response]:
        """Reject a handshake before the upgrade, as the Go server does."""
        url = urlsplit(request.path)
        if url.path != "/ws/node":
            return self._reject(connection, 404, {"error": "404 page not found"}, "unknown path")
        fault = self._fault()
        if fault == "401":
            return self._reject(connection, 401, {"error": "签名验证失败"}, "ws_fault 401")
        if fault == "500":
            return self._reject(connection, 500, {"error": "内部服务器错误"}, "ws_fault 500")
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        pc_id, timestamp, signature = (query.get(name, "") for name in ("pc_id", "timestamp", "signature"))
        if not (pc_id and timestamp and signature):
            return self._reject(connection, 400, {"error": "缺少必要参数"}, "missing parameters")
        if not signing.verify_ws(self._key, pc_id, timestamp, signature, now=self._clock()):
            why = f"bad or expired signature for {pc_id}"
            return self._reject(connection, 401, {"error": "签名验证失败"}, why)
        cast(HubConnection, connection).pc_id = pc_id  # serve() makes every connection a HubConnection
        return None

    def _reject(self, connection: ServerConnection, status: int, body: dict, why: str) -> Response:
        logger.debug("rejecting a WebSocket handshake with %d: %s", status, why)
        self._state.reject_handshake()
        response = connection.respond(status, json.dumps(body, ensure_ascii=False))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json; charset=utf-8"
        return response

    def _handle(self, connection: ServerConnection) -> None:
        """Serve one node: register (evicting an older one), confirm, then read until it ends."""
        state = self._state
        pc_id = cast(HubConnection, connection).pc_id
        # Registered before the confirmation, so a node that saw "connected" finds the hub agreeing.
        session = state.attach(pc_id, connection)
        if self._on_open is not None:
            self._on_open()
        logger.info("node %s connected", pc_id)
        hello = messages.connected(self._dialect, pc_id, uuid.uuid4().hex, self._clock())
        try:
            connection.send(messages.dumps(hello))
            state.mark_greeted(session)
            for frame in connection:
                state.on_frame(session, frame)
        except ConnectionClosed:
            pass
        finally:
            state.detach(session)
            logger.info("node %s disconnected", pc_id)



def _close_shutdown_pair(server: Server) -> None:
    """Close the wake-up pair websockets made for its own accept loop, which this server never runs
    (a socket pair in websockets 16-17, a pipe's descriptors in 13-15; none on Windows)."""
    for name in ("shutdown_watcher", "shutdown_notifier"):
        end = getattr(server, name, None)
        with contextlib.suppress(OSError):
            if isinstance(end, int):
                os.close(end)
            elif end is not None:
                end.close()
