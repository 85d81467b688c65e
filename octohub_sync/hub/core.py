"""LocalHub: a small but real OctoHub hub on 127.0.0.1, for tests, demos and benchmarks."""
from __future__ import annotations

import itertools
import logging
import ssl
import threading
import time
from types import TracebackType
from typing import Optional, Type, Union

from octohub_sync import signing
from octohub_sync.hub import messages
from octohub_sync.hub.api_server import ApiServer
from octohub_sync.hub.deadline import BY_DIALECT, ByDialect, ReadDeadline, read_deadline_for
from octohub_sync.hub.nodes import NodeSessions
from octohub_sync.hub.state import HubState
from octohub_sync.hub.ws_server import WsServer

logger = logging.getLogger(__name__)

__all__ = ["API_FAULTS", "LocalHub", "WS_FAULTS"]

#: Values of :attr:`LocalHub.api_fault` besides None.
API_FAULTS = ("401", "500", "html", "garbage", "timeout")
#: Values of :attr:`LocalHub.ws_fault` besides None.
WS_FAULTS = ("401", "500")
#: Upper bound, in seconds, of each join stop() does.
STOP_TIMEOUT = 5.0


class LocalHub(NodeSessions):
    """An OctoHub hub (API server + WebSocket server) that speaks PROTOCOL.md.

    Args:
        key: the shared signature key.
        host: address both servers bind to.
        api_port: API port (0: any free port).
        ws_port: WebSocket port (0: any free port).
        dialect: ``"seed"`` or ``"go"`` message forms (PROTOCOL.md §3).
        read_deadline: drop (TCP abort) a connection that sent no ping frame for this many
            seconds. By default :data:`GO_READ_DEADLINE` in the go dialect, as the Go server
            does, and none in the seed dialect; an explicit number wins, 0 or None disables it.
        ssl_context: server-side TLS context for both servers (https, wss).
        ws_url_host: host written into the ``wsUrl`` the API hands out (default: ``host``).
        redeliver: on node_ready, re-send tasks sent earlier to that pc_id without a result.
        notify_replaced: tell an evicted connection why before dropping it.
        clock_offset: seconds added to the hub's clock (signature checks, Date header).
        max_size: largest WebSocket message accepted, in bytes.

    Raises:
        ValueError: unknown dialect, or a negative read_deadline.
    """

    def __init__(
        self,
        key: str,
        *,
        host: str = "127.0.0.1",
        api_port: int = 0,
        ws_port: int = 0,
        dialect: str = "seed",
        read_deadline: Union[float, None, ByDialect] = BY_DIALECT,
        ssl_context: Optional[ssl.SSLContext] = None,
        ws_url_host: Optional[str] = None,
        redeliver: bool = True,
        notify_replaced: bool = True,
        clock_offset: float = 0.0,
        max_size: Optional[int] = 16 * 2**20,
    ) -> None:
        if dialect not in messages.DIALECTS:
            raise ValueError(f"dialect must be one of {messages.DIALECTS}, not {dialect!r}")
        self.key = key
        self.host = host
        self.api_port = api_port
        self.ws_port = ws_port
        self.dialect = dialect
        self.read_deadline = read_deadline_for(dialect, read_deadline)
        self.ssl_context = ssl_context
        self.ws_url_host = ws_url_host or host
        self.clock_offset = clock_offset
        self.max_size = max_size
        self._api_fault: Optional[str] = None
        self._ws_fault: Optional[str] = None
        self._state = HubState(
            dialect=dialect, redeliver=redeliver, notify_replaced=notify_replaced, clock=self.now
        )
        self._stopping = threading.Event()
        self._life_lock = threading.Lock()
        self._started = False
        self._task_ids = itertools.count(1)
        self._api: Optional[ApiServer] = None
        self._api_thread: Optional[threading.Thread] = None
        self._deadline: Optional[ReadDeadline] = None
        if self.read_deadline is not None:
            self._deadline = ReadDeadline(self._state.open_sessions, self.read_deadline)
        self._ws = WsServer(
            self._state,
            key=key,
            dialect=dialect,
            clock=self.now,
            fault=lambda: self._ws_fault,
            ssl_context=ssl_context,
            max_size=max_size,
            on_open=None if self._deadline is None else self._deadline.poke,
        )

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> LocalHub:
        """Start both servers.

        Returns:
            self, so that ``hub = LocalHub(key).start()`` reads naturally.

        Raises:
            RuntimeError: the hub was already started (a stopped hub cannot restart).
        """
        with self._life_lock:
            if self._started:
                raise RuntimeError("LocalHub.start() called twice")
            self._started = True
        try:
            self._start_api()
            if self._deadline is not None:
                self._deadline.start()
            self.start_ws()
        except BaseException:
            self.stop()  # e.g. a port in use: leave no thread behind
            raise
        logger.info(
            "local hub listening: API %s, WebSocket port %d (%s dialect)",
            self.api_url,
            self.ws_port,
            self.dialect,
        )
        return self

    def _start_api(self) -> None:
        self._api = ApiServer(
            (self.host, self.api_port),
            state=self._state,
            key=self.key,
            clock=self.now,
            ws_url=self.ws_url,
            fault=lambda: self._api_fault,
            ssl_context=self.ssl_context,
        )
        self.api_port = int(self._api.server_address[1])
        self._api_thread = threading.Thread(
            # A short poll interval keeps stop() fast: shutdown() waits for the next poll.
            target=self._api.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-api", daemon=True
        )
        self._api_thread.start()

    def stop(self) -> None:
        """Stop both servers, abort every connection and join every hub thread. Idempotent."""
        with self._life_lock:
            if not self._started or self._stopping.is_set():
                return
            self._stopping.set()
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
        logger.info("local hub stopped")

    def stop_ws(self) -> None:
        """Stop only the WebSocket server (connections aborted); state and the API stay."""
        self._ws.stop(STOP_TIMEOUT)

    def start_ws(self) -> None:
        """(Re)start the WebSocket server, on the same port once one was bound.

        Raises:
            RuntimeError: the hub is not started, or already stopped.
            OSError: the port cannot be bound again.
        """
        if not self._started or self._stopping.is_set():
            raise RuntimeError("start_ws() needs a started hub that was not stopped")
        if not self._ws.running:
            self.ws_port = self._ws.start(self.host, self.ws_port)

    def __enter__(self) -> LocalHub:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    # -- settings ----------------------------------------------------------

    @property
    def api_fault(self) -> Optional[str]:
        """None, or how the API misbehaves: one of :data:`API_FAULTS`."""
        return self._api_fault

    @api_fault.setter
    def api_fault(self, value: Optional[str]) -> None:
        if value is not None and value not in API_FAULTS:
            raise ValueError(f"api_fault must be None or one of {API_FAULTS}, not {value!r}")
        self._api_fault = value

    @property
    def ws_fault(self) -> Optional[str]:
        """None, or how the WebSocket handshake is refused: one of :data:`WS_FAULTS`."""
        return self._ws_fault

    @ws_fault.setter
    def ws_fault(self, value: Optional[str]) -> None:
        if value is not None and value not in WS_FAULTS:
            raise ValueError(f"ws_fault must be None or one of {WS_FAULTS}, not {value!r}")
        self._ws_fault = value

    @property
    def api_url(self) -> str:
        """Base URL of the API server, e.g. ``http://127.0.0.1:41234``."""
        return f"{'https' if self.ssl_context else 'http'}://{_url_host(self.host)}:{self.api_port}"

    def now(self) -> float:
        """The hub's clock: wall time plus :attr:`clock_offset`."""
        return time.time() + self.clock_offset

    def ws_url(self, pc_id: str) -> str:
        """A freshly signed WebSocket URL for ``pc_id``, as the API hands it out."""
        scheme = "wss" if self.ssl_context else "ws"
        query = signing.ws_query(self.key, pc_id, timestamp=int(self.now()))
        return f"{scheme}://{_url_host(self.ws_url_host)}:{self.ws_port}/ws/node?{query}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
