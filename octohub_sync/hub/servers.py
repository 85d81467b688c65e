"""The running parts of a local hub: API server, WebSocket server and read deadline, started and stopped in order."""
from __future__ import annotations

import functools
import ssl
import threading
from typing import Callable, Optional, Tuple

from octohub_sync.hub.api_server import ApiServer
from octohub_sync.hub.deadline import ReadDeadline
from octohub_sync.hub.state import HubState
from octohub_sync.hub.ws_server import WsServer

#: Upper bound, in seconds, of each join stop() does.
STOP_TIMEOUT = 5.0


class HubServers:
    """Builds a hub's servers, starts them once and stops them once, joining every thread they started.

    Args:
        state: what the hub knows and saw, shared by both servers and the read deadline.
        host: address both servers bind to.
        key: the signature key.
        dialect: ``"seed"`` or ``"go"``.
        clock: the hub's clock.
        ws_url: builds the signed WebSocket URL the API hands out for a pc_id.
        api_fault: returns the current ``api_fault``.
        ws_fault: returns the current ``ws_fault``.
        ssl_context: server-side TLS context for both servers, or None.
        max_size: largest WebSocket message accepted, in bytes (None: no limit).
        read_deadline: seconds a connection may go without a ping frame (None: forever).
        ping_crash: in the go dialect, a ping frame that meets a write ends the WebSocket server.
    """

    def __init__(
        self,
        state: HubState,
        *,
        host: str,
        key: str,
        dialect: str,
        clock: Callable[[], float],
        ws_url: Callable[[str], str],
        api_fault: Callable[[], Optional[str]],
        ws_fault: Callable[[], Optional[str]],
        ssl_context: Optional[ssl.SSLContext],
        max_size: Optional[int],
        read_deadline: Optional[float],
        ping_crash: bool = True,
    ) -> None:
        self._host = host
        self._deadline = None if read_deadline is None else ReadDeadline(state.open_sessions, read_deadline)
        self._ws = WsServer(
            state,
            key=key,
            dialect=dialect,
            clock=clock,
            fault=ws_fault,
            ssl_context=ssl_context,
            max_size=max_size,
            on_open=None if self._deadline is None else self._deadline.poke,
            ping_crash=ping_crash,
        )
        # The API server binds when built, so it is built by start().
        self._make_api: Callable[[Tuple[str, int]], ApiServer] = functools.partial(
            ApiServer, state=state, key=key, clock=clock, ws_url=ws_url, fault=api_fault, ssl_context=ssl_context
        )
        self._api: Optional[ApiServer] = None
        self._api_thread: Optional[threading.Thread] = None
        self._life_lock = threading.Lock()
        self._started = False
        self._stopped = False

    @property
    def started(self) -> bool:
        """start() was called (stopped or not)."""
        return self._started

    def start(self, api_port: int, ws_port: int) -> Tuple[int, int]:
        """Start everything (port 0: any free port); return the bound API and WebSocket ports.

        Raises:
            RuntimeError: already started (stopped servers cannot restart).
            OSError: a port cannot be bound; whatever started is stopped again.
        """
        with self._life_lock:
            if self._started:
                raise RuntimeError("LocalHub.start() called twice")
            self._started = True
        try:
            api_port = self._start_api(api_port)
            if self._deadline is not None:
                self._deadline.start()
            ws_port = self._ws.start(self._host, ws_port)
        except BaseException:
            self.stop()  # e.g. a port in use: leave no thread behind
            raise
        return api_port, ws_port

    def _start_api(self, port: int) -> int:
        self._api = self._make_api((self._host, port))
        self._api_thread = threading.Thread(
            # A short poll interval keeps stop() fast: shutdown() waits for the next poll.
            # Daemon: a test hub must never keep a process alive; stop() joins it.
            target=self._api.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-api", daemon=True
        )
        self._api_thread.start()
        return int(self._api.server_address[1])

    def stop(self) -> bool:
        """Stop both servers, abort every connection and join every thread (each join bounded).

        Returns:
            False if there was nothing to do: never started, or already stopped.
        """
        with self._life_lock:
            if not self._started or self._stopped:
                return False
            self._stopped = True
        if self._api is not None:
            if self._api_thread is not None and self._api_thread.is_alive():
                self._api.shutdown()  # would wait forever for a serve_forever() that never ran
            self._api.server_close()
            self._api.close_requests(STOP_TIMEOUT)  # also releases requests held by the "timeout" fault
        if self._api_thread is not None:
            self._api_thread.join(STOP_TIMEOUT)
        self.stop_ws()
        if self._deadline is not None:
            self._deadline.stop(STOP_TIMEOUT)
        return True

    def start_ws(self, port: int) -> int:
        """(Re)start the WebSocket server unless it runs, on ``port``; return the bound port.

        Raises:
            RuntimeError: not started, or already stopped.
            OSError: the port cannot be bound.
        """
        if not self._started or self._stopped:
            raise RuntimeError("start_ws() needs a started hub that was not stopped")
        if not self._ws.running:
            port = self._ws.start(self._host, port)
        return port

    def stop_ws(self) -> None:
        """Stop only the WebSocket server, aborting its connections."""
        self._ws.stop(STOP_TIMEOUT)
