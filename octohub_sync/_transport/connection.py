"""One WebSocket session: a ``websocket.WebSocketApp`` on its own named thread.

The connection knows nothing about tasks or the protocol: it opens the socket,
hands every frame to ``on_frame``, and reports how it ended. The watchdog
decides what happens next; websocket-client's own ``reconnect=`` is not used
(it retries on a fixed delay and never after a clean close).

Why one module: every write of a session (frames, pings, the close frame) and its close
share one lock and one "closing since"; split, the rule "nothing after our close frame"
would be kept in two files.
"""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Callable, NoReturn, Optional

import websocket

from .._config.proxies import Route
from .._wire import frames, protocol
from .._wire.protocol import Dialect
from .._wire.signing import redact
from ..exceptions import OctoHubError
from .connect_deadline import AttemptDeadline
from .frame_reader import CLOSE_TOO_BIG, BoundedFrames, Fragments, payload_bytes
from .tunnel import bound_writes, open_socket

__all__ = ["Connection"]

logger = logging.getLogger(__name__)

#: How long a clean close waits for the hub's close frame (seconds).
CLOSE_TIMEOUT = 2.0
#: The close code of a close frame that carries none (RFC 6455 §7.1.5).
CLOSE_NO_STATUS = 1005
#: The ``request_id`` of the Go dialect's keep-alive JSON ping: its answer proves the path alive.
KEEPALIVE_ID = "octohub-keepalive"


class Connection:
    """A single attempt at a WebSocket session, from connect to close.

    Args:
        address: returns a freshly signed ``ws://`` or ``wss://`` address (called on the
            connection thread, so a slow API never blocks the watchdog; never logged).
        number: attempt number, for the thread name and log lines.
        on_open / on_frame / on_closed: callbacks run on the connection thread.
        on_pong: called with the payload of every pong (a pong frame, or on the Go dialect the
            ``request_id`` of a JSON pong, see :meth:`heard_pong`), on the connection thread.
        ssl_context: used for ``wss``.
        route: says through which proxy, if any, a WebSocket address is reached.
        connect_timeout: bounds the TCP connect, the proxy's handshake, the TLS and WebSocket
            handshakes together, and afterwards any single blocked send (and, on a TLS socket,
            any blocked read: see ``tunnel.bound_writes``).
        ping_interval: the longest time without a keep-alive from us (:meth:`keep_alive`; the
            watchdog judges missing pongs).
        post: runs a job on the send thread: the pong that answers the hub's ping is written
            there, never on the connection thread, which must go on reading while a write waits
            (a hub that stops reading while its own write waits for us would wait for ever).
        max_frame_bytes: a frame, or a message's fragments together, declaring more ends the
            connection with close code 1009 before the payload is read (``wsread.frame_bound``).
    """

    def __init__(
        self,
        address: Callable[[], str],
        *,
        number: int,
        on_open: Callable[["Connection"], None],
        on_frame: Callable[["Connection", "str | bytes", bool], None],
        on_closed: Callable[["Connection", Optional[int], str], None],
        on_pong: Callable[["Connection", bytes], None],
        ssl_context: Optional[ssl.SSLContext],
        route: Callable[[str], Route],
        connect_timeout: float,
        ping_interval: float,
        post: Callable[[Callable[[], None]], None] = lambda job: job(),
        max_frame_bytes: int = 2**31,
    ) -> None:
        self._address = address
        self.number = number
        self.opened_at: Optional[float] = None
        self.last_pong = 0.0
        self.close_code: Optional[int] = None
        #: When :meth:`begin_close` sent our close frame (monotonic), else None.
        self.closing_since: Optional[float] = None
        self._on_open, self._on_frame, self._on_closed = on_open, on_frame, on_closed
        self._on_pong = on_pong
        self._ssl_context = ssl_context
        self._route = route
        #: How this connection reached the hub (set once the address is known).
        self.route: Optional[Route] = None
        self._connect_timeout = connect_timeout
        #: This attempt's one deadline for the API request, TCP, proxy, TLS and the WebSocket handshake.
        self.deadline: Optional[AttemptDeadline] = None
        self._ping_interval = ping_interval
        self._post = post
        #: The hub's dialect, from its ``connected`` message (_node/receiver.py); None until then. It decides
        #: how the node keeps the connection open and asks for answers (:meth:`ping`, :meth:`keep_alive`).
        self.dialect: Optional[Dialect] = None
        #: This end's and the hub's (or the proxy's) socket addresses, once open; None if unknown.
        self.local_address: Optional[tuple] = None
        self.peer_address: Optional[tuple] = None
        self._last_keep_alive = 0.0  # when we last wrote what extends the hub's read deadline (monotonic)
        self._pong_payload: Optional[bytes] = None  # the latest ping of the hub's, not answered yet
        self._max_frame_bytes = max_frame_bytes
        self._binary = False
        self._sock: Optional[socket.socket] = None
        # Held around every frame we write, and the check before it: once closing_since is set,
        # nothing is written after the close frame (the hub reads nothing after it, RFC 6455 §5.5.1).
        self._write_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._close_thread: Optional[threading.Thread] = None
        self._app = websocket.WebSocketApp(
            "",
            on_open=self._opened,
            on_message=self._message,
            on_data=self._data,
            on_pong=self._pong,
            on_error=self._error,
            on_close=self._closed,
        )
        self.error: Optional[str] = None
        #: What kind of failure ``error`` is (exception type, plus the HTTP status where there is one):
        #: repeats of one kind are logged less loudly than the first.
        self.error_kind: Optional[str] = None
        # Daemon: a socket stuck in the kernel must never keep the process alive at exit;
        # stop() joins this thread explicitly.
        self.thread = threading.Thread(target=self._run, name=f"octohub-conn-{number}", daemon=True)

    def start(self) -> None:
        """Open the connection on its own thread; returns at once."""
        self.thread.start()

    def send_many(self, messages: list[str]) -> bool:
        """Send text frames, in order, in one write (thread-safe).

        Returns:
            True if they were written; False, writing nothing, once :meth:`begin_close` was called.

        Raises:
            websocket.WebSocketException, OSError: the connection is gone or stalled.
        """
        return self._write_frames(b"".join([frames.text(message) for message in messages]))

    def _write_frames(self, data: bytes) -> bool:
        """Write whole frames, unless our close has begun; the locks are held for the system call only."""
        with self._write_lock:
            if self.closing_since is not None:
                return False
            ws = self._app.sock
            if ws is None or ws.sock is None:
                raise websocket.WebSocketConnectionClosedException("socket is already closed.")
            with ws.lock:  # websocket-client's own: its pongs and its keep-alive pings are frames too
                ws.sock.sendall(data)  # the socket's timeout bounds the whole write, as it bounds send()
            return True

    @property
    def closed_cleanly(self) -> bool:
        """We sent a close frame and the hub answered with its own: it read everything sent before."""
        return self.closing_since is not None and self.close_code is not None

    def begin_close(self) -> None:
        """Stop writing, send a close frame (code 1000) and return at once, whatever the socket does.

        From now on :meth:`send_many` and :meth:`ping` write nothing. The close frame goes out on a
        short-lived thread of its own, after any write in progress: the watchdog that calls this
        must never wait for a stalled socket (_ops/liveness.py). The session ends when the hub's close
        frame arrives; whoever waits for that bounds the wait (:meth:`close`, or the watchdog,
        which aborts after ``CLOSE_TIMEOUT``).
        """
        with self._close_lock:  # never held while writing: the watchdog and stop() may both call this
            if self.closing_since is not None:
                return
            self.closing_since = time.monotonic()
        if self._app.sock is None or self.opened_at is None:
            self._app.keep_running = False  # not open yet: nothing to say goodbye to
            self.abort()
            return
        # Daemon: a close frame stuck in a stalled socket must not hold the process; abort() ends it.
        thread = threading.Thread(target=self._send_close, name=f"octohub-close-{self.number}", daemon=True)
        self._close_thread = thread
        thread.start()

    def _send_close(self) -> None:
        # Only send the close frame: the connection thread reads the hub's answer (keep_running stays
        # True so that it does). Two threads reading one socket, as WebSocketApp.close() would, can
        # leave the reader asleep in select() on a closed descriptor until the next ping timeout.
        try:
            with self._write_lock:
                ws = self._app.sock
                if ws is None:
                    return
                ws.send_close(websocket.STATUS_NORMAL)
        except Exception as exc:  # a dead socket cannot be closed politely
            logger.debug("close frame on connection %s: %s", self.number, exc)
            self.abort()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close with code 1000 and wait for the thread; abort the socket if it lingers."""
        self.begin_close()
        self.thread.join(min(timeout, CLOSE_TIMEOUT))
        if self.thread.is_alive():
            self.abort()
            self.thread.join(timeout)

    def ping(self, payload: bytes) -> bool:
        """Ask the hub for an answer carrying ``payload`` (ASCII); it reaches ``on_pong`` (thread-safe).

        On the Go dialect a JSON ping with ``payload`` as its ``request_id``, never a ping frame: the
        Go server answers a ping frame from the goroutine that reads, which crashes it while its writer
        writes (docs/protocol.md §4); its JSON pong comes through its queue, after its answers to all
        we sent before. On the seed dialect a ping frame, which also keeps the connection open.
        Only after the hub's ``connected`` (:attr:`dialect` set): before it, nothing is asked.

        Returns:
            True if it was written; False once :meth:`begin_close` was called, or before ``connected``.

        Raises:
            websocket.WebSocketException, OSError: the connection is gone or stalled.
        """
        if self.dialect is None:
            return False
        if self.dialect is Dialect.GO:
            return self._write_frames(frames.text(protocol.json_ping(payload.decode("ascii"))))
        written = self._write_frames(frames.ping(payload))
        if written:
            self._last_keep_alive = time.monotonic()
        return written

    def keep_alive_due(self) -> Optional[float]:
        """When the next keep-alive is due (monotonic); None while the connection is not open or closing."""
        if self.opened_at is None or self.closing_since is not None:
            return None
        return self._last_keep_alive + self._ping_interval

    def keep_alive(self, now: float) -> None:
        """Keep the connection open if nothing did for ``ping_interval`` (the send thread).

        Only control frames extend the Go server's read deadline (docs/protocol.md §4). On the seed
        dialect a ping frame (the delivery's confirmation pings count too). On the Go dialect, and
        before the hub's ``connected`` says which, an unsolicited pong frame (RFC 6455 §5.5.3), which
        the Go server takes without writing anything; on the Go dialect with a JSON ping in the same
        write, whose answer proves the path alive. Written as every frame of ours is
        (:meth:`_write_frames`), so a stalled path fails it within the write bound.

        Raises:
            websocket.WebSocketException, OSError: the connection is gone or stalled.
        """
        due = self.keep_alive_due()
        if due is None or now < due:
            return
        if self.dialect is Dialect.SEED:
            self.ping(b"")
            return
        data = frames.pong(b"")
        if self.dialect is Dialect.GO:
            data += frames.text(protocol.json_ping(KEEPALIVE_ID))
        if self._write_frames(data):
            self._last_keep_alive = now

    def heard_pong(self, payload: bytes) -> None:
        """A pong arrived (the connection thread): a pong frame, or on the Go dialect a JSON pong,
        whose ``request_id`` is ``payload``. Either proves the path alive and may confirm results."""
        self.last_pong = time.monotonic()
        self._on_pong(self, payload)

    def abort(self) -> None:
        """Tear the TCP connection down without a close frame (dead or stalled path)."""
        self._app.keep_running = False
        if self.deadline is not None:
            self.deadline.cut()  # still connecting: the API request's socket too (stop() must not wait for it)
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- the connection thread -------------------------------------------------------------

    def _run(self) -> None:
        deadline = self.deadline = AttemptDeadline(self._connect_timeout, name=f"octohub-deadline-{self.number}")
        try:
            self._connect(deadline)
        finally:
            deadline.finish()

    def _connect(self, deadline: AttemptDeadline) -> None:
        try:
            with deadline.current():  # the API request's sockets are cut with the deadline too
                self._app.url = self._address()
            self._sock = self._open_socket(self._app.url, deadline)
        except OctoHubError as exc:
            hint = getattr(exc, "hint", "")
            self.error = f"{exc}{' - ' + hint if hint else ''}"
            self.error_kind = _kind(exc)
            self._on_closed(self, None, self.error)
            return
        except Exception as exc:  # DNS, refused, TLS: all mean "this attempt failed"
            self.error = _describe(exc)
            self.error_kind = _kind(exc)
            self._on_closed(self, None, self.error)
            return
        self._app.prepared_socket = self._sock
        try:
            if self.closing_since is None:
                self._app.run_forever(
                    # No ping thread of websocket-client's: the send thread keeps the connection alive
                    # (keep_alive), through our own bounded writes.
                    ping_interval=0,
                    # Nor its ping_timeout: the watchdog judges silence by the last pong of any kind.
                    ping_timeout=None,
                    skip_utf8_validation=True,  # dispatch checks UTF-8 itself: a bad frame must not end the session
                )
            else:
                self._on_closed(self, None, "closed before it opened")
        finally:
            closer = self._close_thread
            if closer is not None and closer.is_alive():
                self.abort()  # wakes a close frame stuck in a stalled socket, so that its thread ends too
                closer.join(CLOSE_TIMEOUT)
            # websocket-client's teardown does not always close the descriptor (after our close frame).
            self._sock.close()

    def _open_socket(self, url: str, deadline: AttemptDeadline) -> socket.socket:
        # Our own socket, so that connect, proxy and handshakes are bounded by the attempt's deadline
        # (websocket-client would use the process-wide default timeout, None, and its own proxy rules).
        self.route = self._route(url)
        return open_socket(url, proxy=self.route.proxy, ssl_context=self._ssl_context, timeout=self._connect_timeout,
                           deadline=deadline)

    def _opened(self, app: websocket.WebSocketApp) -> None:
        if self.deadline is not None:
            self.deadline.finish()  # connected: from now on the keep-alive judges the path
        # The upgrade had what was left of the connect budget; from now on a blocked read or send gets all of it.
        if self._sock is not None:
            bound_writes(self._sock, self._connect_timeout)
        self.opened_at = self.last_pong = self._last_keep_alive = time.monotonic()
        if self._sock is not None:
            try:
                self.local_address, self.peer_address = self._sock.getsockname(), self._sock.getpeername()
            except OSError:  # already gone: the session ends at the first read
                pass
        if app.sock is not None:
            # Frames are judged by their header, fragments joined in linear time: frame_reader.py says why.
            ws = app.sock
            frames_in = BoundedFrames(ws.frame_buffer.recv_strict, bound=self._max_frame_bytes, refuse=self._refuse)
            # websocket-client answers a ping on the reading thread, under the lock of every write:
            # its one call of pong() (recv_data_frame) gets ours, which writes on the send thread.
            ws.frame_buffer, ws.cont_frame, ws.pong = frames_in, Fragments(), self._answer_ping  # type: ignore[assignment, method-assign]  # patches websocket-client: its reader has no hook
        self._on_open(self)

    def _refuse(self, code: int, why: str) -> NoReturn:
        """(The connection thread.) End the connection over a frame the hub sent: close frame ``code``, then raise.

        The close frame is written only if no other write is under way and the socket takes it at once:
        this thread never waits for a write. websocket-client is then told the socket is no longer
        connected, so that its teardown neither sends a second close frame (1000) nor reads on for 3 s.
        """
        with self._close_lock:
            first = self.closing_since is None
            if first:
                self.closing_since = time.monotonic()  # from here nothing else is written
        ws = self._app.sock
        if first and ws is not None and ws.sock is not None and self._write_lock.acquire(blocking=False):
            try:
                reason = b"message too big" if code == CLOSE_TOO_BIG else b"protocol error"
                payload = code.to_bytes(2, "big") + reason
                frame = websocket.ABNF.create_frame(payload, websocket.ABNF.OPCODE_CLOSE).format()
                ws.sock.setblocking(False)
                ws.sock.send(frame)
            except (OSError, ValueError) as exc:  # full or dead: the hub sees the connection end without it
                logger.debug("close frame %s on connection %s not written: %s", code, self.number, exc)
            finally:
                self._write_lock.release()
        if ws is not None:
            ws.connected = False
        raise websocket.WebSocketProtocolException(f"{why} (close code {code})")

    def _answer_ping(self, payload: "str | bytes" = b"") -> None:
        # Only the latest ping is answered (RFC 6455 §5.5.3 allows it): however many the hub sends while
        # the send thread is busy, one pong waits, and the same job is posted once (sender.py).
        self._pong_payload = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        self._post(self._write_pong)

    def _write_pong(self) -> None:
        payload, self._pong_payload = self._pong_payload, None
        if payload is None:
            return
        try:
            self._write_frames(frames.pong(payload))
        except Exception as exc:  # like any failed send: the session is over
            logger.debug("pong on connection %s failed: %s", self.number, exc)
            self.abort()

    def _data(self, app: websocket.WebSocketApp, data: object, opcode: int, fin: bool) -> None:
        # on_data runs just before on_message for the same frame: it is the only place
        # websocket-client tells text and binary frames apart.
        self._binary = opcode == websocket.ABNF.OPCODE_BINARY

    def _message(self, app: websocket.WebSocketApp, frame: "str | bytes") -> None:
        self._on_frame(self, frame, self._binary)

    def _pong(self, app: websocket.WebSocketApp, data: bytes) -> None:
        self.heard_pong(data)

    def _error(self, app: websocket.WebSocketApp, exc: BaseException) -> None:
        if isinstance(exc, websocket.ABNF) and exc.opcode == websocket.ABNF.OPCODE_CLOSE:
            # websocket-client before 1.9.2 (the last for Python 3.9) hands the hub's close frame to
            # on_error and gives on_close no code: read it here, or a clean close looks like a drop.
            data = payload_bytes(exc)
            self.close_code = int.from_bytes(data[:2], "big") if len(data) >= 2 else CLOSE_NO_STATUS
            self.error = f"closed by the hub (code {self.close_code})"
            return
        self.error = _describe(exc)
        self.error_kind = _kind(exc)
        if self.opened_at is None and self.deadline is not None and self.deadline.expired:
            # The deadline cut the socket; what websocket-client says of it ("connection lost") would mislead.
            self.error = (f"timeout: the WebSocket handshake did not finish within OCTOHUB_CONNECT_TIMEOUT "
                          f"({self._connect_timeout:g} s)")
            self.error_kind = "timeout"
        if self.opened_at is None and getattr(exc, "status_code", None) == 401:
            self.error += (" - the WebSocket server refused the signature: check the key it uses "
                           "(OCTOHUB_WS_SIGNATURE_KEY in direct mode) and this machine's clock")

    def _closed(self, app: websocket.WebSocketApp, code: Optional[int], reason: Optional[str]) -> None:
        if code is not None:
            self.close_code = code
        self._on_closed(self, self.close_code, self.error or (reason or ""))


def _kind(exc: BaseException) -> str:
    """``Type`` or ``Type/status``: failures of one kind repeat with other details (URLs, times)."""
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    return f"{type(exc).__name__}/{status}" if status else type(exc).__name__


def _describe(exc: BaseException) -> str:
    """``Type: message`` with any signature masked (errors can quote the URL)."""
    return f"{type(exc).__name__}: {redact(str(exc))}"
