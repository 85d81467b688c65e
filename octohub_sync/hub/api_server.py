"""The hub's signed HTTP API ``GET /node/ws`` (docs/protocol.md §1), on the stdlib HTTP server.

Each request runs on a named daemon thread; close_requests() unblocks and joins them.
"""
from __future__ import annotations

import email.utils
import itertools
import json
import logging
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Tuple, Union
from urllib.parse import parse_qsl, urlsplit

from octohub_sync._wire import signing
from octohub_sync.hub.state import HubState

logger = logging.getLogger(__name__)

#: Seconds a client gets for the TLS handshake and for each read of its request.
IO_TIMEOUT = 10.0

_SIGNATURE_HEADERS = ("X-Signature", "X-Timestamp", "X-Nonce")
_HTML_PAGE = (
    "<html><head><title>502 Bad Gateway</title></head><body>"
    "<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)

Reply = Tuple[int, Union[dict, str]]


def _fault_reply(fault: str) -> Reply:
    if fault == "401":
        return 401, {"errcode": 401, "errmsg": "signature verification failed"}
    if fault == "500":
        return 500, {"errcode": 500, "errmsg": "internal server error"}
    if fault == "html":
        return 502, _HTML_PAGE
    return 200, "this is not JSON {"  # "garbage"


class ApiServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer whose request threads are named, daemon, tracked and joinable.

    Args:
        address: ``(host, port)`` to bind (port 0: any free port).
        state: where every request is recorded.
        key: the signature key of the API request.
        clock: the hub's clock (signature checks, ``Date`` header).
        ws_url: builds the freshly signed WebSocket URL handed out for a pc_id.
        fault: returns the current ``api_fault`` (None or one of ``API_FAULTS``).
        ssl_context: server-side TLS context (https), or None.
    """

    daemon_threads = True

    def __init__(
        self,
        address: Tuple[str, int],
        *,
        state: HubState,
        key: str,
        clock: Callable[[], float],
        ws_url: Callable[[str], str],
        fault: Callable[[], Optional[str]],
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self._state = state
        self._key = key
        self.clock = clock
        self._ws_url = ws_url
        self.fault = fault
        self._ssl_context = ssl_context
        self._closing = threading.Event()  # releases the requests held by the "timeout" fault
        self._lock = threading.Lock()
        self._requests: dict[threading.Thread, socket.socket] = {}
        self._ids = itertools.count(1)
        self._nonces: dict[str, float] = {}
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_one,
            args=(request, client_address),
            name=f"hub-api-req-{next(self._ids)}",
            daemon=True,
        )
        with self._lock:
            self._requests[thread] = request
        thread.start()

    def _serve_one(self, request: socket.socket, client_address: Any) -> None:
        me = threading.current_thread()
        try:
            context = self._ssl_context
            if context is not None:
                # The TLS handshake happens here, not in the accept loop, so one slow client stalls nobody.
                request.settimeout(IO_TIMEOUT)
                request = context.wrap_socket(request, server_side=True)
                with self._lock:
                    self._requests[me] = request
            self.finish_request(request, client_address)
        except Exception as exc:
            logger.debug("API request from %s failed: %s", client_address, exc)
        finally:
            self.shutdown_request(request)
            with self._lock:
                self._requests.pop(me, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("API request from %s failed", client_address, exc_info=True)

    def record(self, record: dict[str, Any]) -> None:
        """Record one request (status 0: never answered)."""
        self._state.record_api(record)

    def hold(self) -> None:
        """Keep a request unanswered until the server closes (the "timeout" fault)."""
        self._closing.wait()

    def route(self, method: str, path: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        """The answer to one request: a fault, an error, or the signed WebSocket URL."""
        fault = self.fault()
        if fault is not None:
            return _fault_reply(fault)
        if path != "/node/ws":
            return 404, {"errcode": 404, "errmsg": f"no such path: {path}"}
        now = self.clock()
        if not signing.verify_api(self._key, method, path, params, headers, now=now):
            return 401, {"errcode": 401, "errmsg": "signature verification failed"}
        if not self._use_nonce(headers["X-Nonce"], now):
            return 401, {"errcode": 401, "errmsg": "signature verification failed: nonce already used"}
        pc_id = params.get("pc_id")
        if not pc_id:
            return 400, {"errcode": 400, "errmsg": "missing parameter pc_id"}
        return 200, {"errcode": 0, "errmsg": "success", "data": {"wsUrl": self._ws_url(pc_id)}}

    def _use_nonce(self, nonce: str, now: float) -> bool:
        """Remember a nonce; False if it was already used (a replay)."""
        with self._lock:
            if nonce in self._nonces:
                return False
            if len(self._nonces) > 10_000:
                # Older nonces need no memory: their timestamps are refused anyway.
                horizon = now - 2 * signing.MAX_SKEW
                self._nonces = {n: t for n, t in self._nonces.items() if t >= horizon}
            self._nonces[nonce] = now
            return True

    def close_requests(self, timeout: float) -> None:
        """Unblock every request thread (held ones released, sockets shut down) and join them."""
        deadline = time.monotonic() + timeout
        self._closing.set()
        with self._lock:
            pending = dict(self._requests)
        for sock in pending.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its own thread
        for thread in pending:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    server_version = "OctoHubLocal/1.0"
    timeout = IO_TIMEOUT

    def do_GET(self) -> None:
        server = self.server
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        record = {
            "path": url.path,
            "params": params,
            "headers": dict(self.headers.items()),
            "status": 0,
            "time": time.monotonic(),  # arrival, so tests can measure retry spacing
        }
        if server.fault() == "timeout":
            server.record(record)  # status 0: never answered
            server.hold()
            self.close_connection = True
            return
        headers = {name: self.headers[name] for name in _SIGNATURE_HEADERS if name in self.headers}
        status, body = server.route(self.command, url.path, params, headers)
        record["status"] = status
        server.record(record)
        self._reply(status, body)

    def _reply(self, status: int, body: Union[dict, str]) -> None:
        if isinstance(body, dict):
            payload = json.dumps(body, ensure_ascii=False).encode()
            content_type = "application/json;charset=UTF-8"
        else:
            payload = body.encode()
            content_type = "text/html; charset=utf-8" if body is _HTML_PAGE else "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def date_time_string(self, timestamp: Optional[float] = None) -> str:
        # The Date header shows the hub's (possibly skewed) clock, which nodes may use to detect skew.
        return email.utils.formatdate(self.server.clock() if timestamp is None else timestamp, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("API %s: %s", self.client_address[0], signing.redact(format % args))
