"""LocalHub: a small but real OctoHub hub on 127.0.0.1, for tests, demos and benchmarks.

Why one module: the test hub's public surface (tasks, waiting, faults, both dialects) is one class
that tests read as a reference; its servers and its state are apart (servers.py, state.py), and so are
the read-only views of what it recorded (recorded.py).
"""
from __future__ import annotations

import itertools
import logging
import secrets
import ssl
import time
from types import TracebackType
from typing import Any, Callable, List, Optional, Type, Union

from octohub_sync._wire import signing
from octohub_sync._wire.addresses import host_for_url
from octohub_sync.hub import messages
from octohub_sync.hub.deadline import BY_DIALECT, ByDialect, read_deadline_for
from octohub_sync.hub.recorded import RecordedState
from octohub_sync.hub.servers import HubServers
from octohub_sync.hub.sockets import abort
from octohub_sync.hub.state import HubState
from octohub_sync.hub.table import NodeSession

logger = logging.getLogger(__name__)

__all__ = ["API_FAULTS", "LocalHub", "WS_FAULTS"]

#: Values of :attr:`LocalHub.api_fault` besides None.
API_FAULTS = ("401", "500", "html", "garbage", "timeout")
#: Values of :attr:`LocalHub.ws_fault` besides None.
WS_FAULTS = ("401", "500")
#: Upper bound, in seconds, of the waits done by drop() and close().
CLOSE_WAIT = 5.0


class LocalHub(RecordedState):
    """An OctoHub hub (API server + WebSocket server) that speaks the protocol of docs/protocol.md.

    It owns a ``HubState`` (what the hub knows and saw) and ``HubServers`` (API server,
    WebSocket server, read deadline), both built from the arguments below and handed what
    they use; every public method reads or acts on that state.

    Args:
        key: the shared signature key.
        host: address both servers bind to.
        api_port: API port (0: any free port).
        ws_port: WebSocket port (0: any free port).
        dialect: ``"seed"`` or ``"go"`` message forms (docs/protocol.md §3.1).
        read_deadline: drop (TCP abort) a connection that sent no ping frame for this many
            seconds. By default :data:`GO_READ_DEADLINE` in the go dialect, as the Go server
            does, and none in the seed dialect; an explicit number wins, 0 or None disables it.
        ssl_context: server-side TLS context for both servers (https, wss).
        ws_url_host: host written into the ``wsUrl`` the API hands out (default: ``host``).
        redeliver: on node_ready, re-send tasks sent earlier to that pc_id without a result.
        notify_replaced: tell an evicted connection why before dropping it.
        clock_offset: seconds added to the hub's clock (signature checks, Date header).
        max_size: largest WebSocket message accepted, in bytes.
        ping_crash: in the go dialect, the real server's crash (docs/protocol.md §4): a ping frame
            from a node that meets a write under way for it ends the WebSocket server, every
            connection dropped without a close frame, until :meth:`start_ws` (hub/go_writer.py
            gives the rule). The go dialect also writes through the server's queue of 256, which
            drops what finds it full. No effect in the seed dialect.

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
        ping_crash: bool = True,
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
        # Task ids unique to this hub's run: a node with a ledger (the program's default) answers an id
        # it finished before with the stored result, so a restarted hub must not reuse the last run's.
        self._run = secrets.token_hex(3)
        self._task_ids = itertools.count(1)
        self._state = HubState(dialect=dialect, redeliver=redeliver, notify_replaced=notify_replaced, clock=self.now)
        self._servers = HubServers(
            self._state,
            host=host,
            key=key,
            dialect=dialect,
            clock=self.now,
            ws_url=self.ws_url,
            api_fault=lambda: self._api_fault,
            ws_fault=lambda: self._ws_fault,
            ssl_context=ssl_context,
            max_size=max_size,
            read_deadline=self.read_deadline,
            ping_crash=ping_crash,
        )

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> LocalHub:
        """Start both servers.

        Returns:
            self, so that ``hub = LocalHub(key).start()`` reads naturally.

        Raises:
            RuntimeError: the hub was already started (a stopped hub cannot restart).
            OSError: a port cannot be bound (the hub is then stopped).
        """
        self.api_port, self.ws_port = self._servers.start(self.api_port, self.ws_port)
        logger.info(
            "local hub listening: API %s, WebSocket port %d (%s dialect)", self.api_url, self.ws_port, self.dialect
        )
        return self

    def stop(self) -> None:
        """Stop both servers, abort every connection and join every hub thread. Idempotent."""
        if self._servers.stop():
            logger.info("local hub stopped")

    def stop_ws(self) -> None:
        """Stop only the WebSocket server (connections aborted); state and the API stay."""
        self._servers.stop_ws()

    def start_ws(self) -> None:
        """(Re)start the WebSocket server, on the same port once one was bound.

        Raises:
            RuntimeError: the hub is not started, or already stopped.
            OSError: the port cannot be bound again.
        """
        self.ws_port = self._servers.start_ws(self.ws_port)

    def __enter__(self) -> LocalHub:
        if not self._servers.started:
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
        return f"{'https' if self.ssl_context else 'http'}://{host_for_url(self.host)}:{self.api_port}"

    def now(self) -> float:
        """The hub's clock: wall time plus :attr:`clock_offset`."""
        return time.time() + self.clock_offset

    def ws_url(self, pc_id: str) -> str:
        """A freshly signed WebSocket URL for ``pc_id``, as the API hands it out."""
        scheme = "wss" if self.ssl_context else "ws"
        query = signing.ws_query(self.key, pc_id, timestamp=int(self.now()))
        return f"{scheme}://{host_for_url(self.ws_url_host)}:{self.ws_port}/ws/node?{query}"

    # -- sending -----------------------------------------------------------

    def send_task(
        self,
        task_type: str,
        data: Any = None,
        *,
        task_id: Optional[str] = None,
        timeout: Optional[float] = None,
        pc_id: Optional[str] = None,
        extra: Optional[dict[str, Any]] = None,
    ) -> str:
        """Send a task, or keep it pending until its node is ready.

        Args:
            task_type: handler name on the node.
            data: task payload (``{}`` when None).
            task_id: id to use; by default ``task_<run>_<n>``, ``<run>`` random per hub (never reused by a restarted hub).
            timeout: optional ``timeout`` field of the message.
            pc_id: target node; default the only/most recently connected node, or, if
                none ever connected, whichever node sends ``node_ready`` first.
            extra: more top-level fields of the message.

        Returns:
            The task id. Never raises because a connection died: the task stays pending.
        """
        if task_id is None:
            task_id = f"task_{self._run}_{next(self._task_ids)}"
        message = messages.task(task_id, task_type, data, timeout=timeout, extra=extra)
        self._state.add_task(task_id, pc_id, messages.dumps(message))
        return task_id

    def send_task_at_close(self, task_type: str, data: Any = None, *, task_id: Optional[str] = None,
                           pc_id: Optional[str] = None, answer_after: float = 0.0) -> str:
        """Send a task the moment the node's close frame arrives, just before the hub answers it.

        The hub then believes the task delivered on a connection the node is closing: the node
        must run it and answer on its next connection (docs/protocol.md §8).

        Args:
            answer_after: seconds the hub's close frame then takes to leave (a slow link); the hub
                reads nothing from that node meanwhile.

        Returns:
            The task id.

        Raises:
            ConnectionError: that node is not connected.
        """
        if task_id is None:
            task_id = f"task_{self._run}_{next(self._task_ids)}"
        message = messages.task(task_id, task_type, data)
        self._state.add_task(task_id, pc_id, messages.dumps(message), at_close=answer_after)
        return task_id

    def skip_pongs(self, count: int, *, prefix: bytes = b"octohub-ack:", pc_id: Optional[str] = None) -> None:
        """Answer none of the next ``count`` ping frames whose payload starts with ``prefix``
        (by default the node's delivery confirmations, docs/protocol.md §8), and none of the JSON
        pings whose ``request_id`` does (the go dialect's, as the Go server's full queue drops their
        answers); 0 answers all again.

        Raises:
            ConnectionError: that node is not connected.
        """
        sessions = self._state.sessions(pc_id)
        if not sessions:
            raise ConnectionError(f"no node connected with pc_id {pc_id!r}" if pc_id else "no node connected")
        for session in sessions:
            session.ws.skip_prefix, session.ws.pongs_to_skip = prefix, count

    def cancel(self, task_id: str, reason: Optional[str] = None, *, pc_id: Optional[str] = None) -> None:
        """Send ``task_cancel`` for a task, in the hub's dialect (docs/protocol.md §3.2).

        It goes to the node the task was sent to (or is meant for); ``pc_id`` picks another.
        The task's answer comes as a task_result, as always: :meth:`wait_result`.

        Raises:
            ConnectionError: that node is not connected, or the send failed.
        """
        target = pc_id if pc_id is not None else self._state.owner(task_id)
        self.send_message(messages.task_cancel(self.dialect, task_id, reason), target)

    def wait_progress(self, task_id: str, predicate: Callable[[dict], bool] = lambda frame: True,
                      timeout: float = 10.0) -> dict:
        """Wait for a task_progress of ``task_id`` for which ``predicate(frame)`` holds, and return it.

        Raises:
            TimeoutError: none arrived within ``timeout`` seconds.
        """
        found: list[dict] = []

        def seen() -> bool:
            found[:] = [frame for frame in self._state.progress.get(task_id, ()) if predicate(frame)]
            return bool(found)

        if not self.wait_for(seen, timeout):
            raise TimeoutError(f"no matching task_progress for task_id {task_id!r} within {timeout} s")
        return found[0]

    def send_message(self, message: dict[str, Any], pc_id: Optional[str] = None) -> None:
        """Send any JSON object to a node.

        Raises:
            ConnectionError: no such node is connected, or the send failed.
        """
        self._state.send(pc_id, messages.dumps(message))

    def send_raw(self, frame: Union[str, bytes], pc_id: Optional[str] = None) -> None:
        """Send one exact frame (bytes go as a binary frame).

        Raises:
            ConnectionError: no such node is connected, or the send failed.
        """
        self._state.send(pc_id, frame)

    def send_json_ping(self, pc_id: Optional[str] = None) -> str:
        """Send a JSON-level ping; return its request_id (``""`` in the seed dialect).

        Raises:
            ConnectionError: no such node is connected, or the send failed.
        """
        message, request_id = messages.ping(self.dialect)
        self.send_message(message, pc_id)
        return request_id

    # -- connections -------------------------------------------------------

    def sessions(self, pc_id: Optional[str] = None) -> List[NodeSession]:
        """The connections the hub knows (of one pc_id, or all), not :attr:`forgotten` ones.

        Each :class:`NodeSession`'s ``ws`` is the websockets server connection, for tests
        that must send what :meth:`send_raw` cannot (e.g. invalid UTF-8 in a text frame).
        """
        return self._state.sessions(pc_id)

    def connected(self, pc_id: Optional[str] = None) -> bool:
        """Whether the hub knows a connection of that node (or of any node)."""
        return bool(self._state.sessions(pc_id))

    def drop(self, pc_id: Optional[str] = None) -> int:
        """Abort the TCP connection(s) of ``pc_id`` (or all), with no close frame.

        Like :meth:`close`, it reaches only the connections the hub knows, not :attr:`forgotten` ones.

        Returns:
            How many connections were dropped; they are unregistered when this returns.
        """
        sessions = self._state.sessions(pc_id)
        for session in sessions:
            abort(session.ws)
        self._wait_closed(sessions)
        return len(sessions)

    def close(self) -> None:
        """The same as :meth:`stop`: the hub ends, as a server's ``close()`` ends it.

        It once closed the nodes' connections only and left the hub running, which is not what
        ``close()`` means anywhere else; that is now :meth:`close_connections`.
        """
        self.stop()

    def close_connections(self, pc_id: Optional[str] = None, code: int = 1000) -> int:
        """Close the connection(s) of ``pc_id`` (or all) with a clean close handshake; the hub runs on.

        Returns:
            How many connections were closed.
        """
        sessions = self._state.sessions(pc_id)
        for session in sessions:
            session.ws.close(code)
        self._wait_closed(sessions)
        return len(sessions)

    def _wait_closed(self, sessions: List[NodeSession]) -> None:
        self.wait_for(lambda: all(session.info["closed"] is not None for session in sessions), CLOSE_WAIT)

    # -- waiting -----------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds, re-checking on every state change.

        Returns:
            ``predicate()`` at the end (False on timeout).
        """
        return self._state.wait_for(predicate, timeout)

    def wait_connected(self, pc_id: Optional[str] = None, timeout: float = 10.0) -> bool:
        """Wait until that node (or any node) is connected and has sent ``node_ready``."""
        return self.wait_for(lambda: any(session.ready for session in self._state.sessions(pc_id)), timeout)

    def wait_result(self, task_id: str, timeout: float = 10.0) -> dict:
        """Wait for the first task_result of ``task_id`` and return it.

        Raises:
            TimeoutError: none arrived within ``timeout`` seconds.
        """
        if not self.wait_for(lambda: task_id in self._state.results, timeout):
            raise TimeoutError(f"no task_result for task_id {task_id!r} within {timeout} s")
        return self._state.results[task_id][0]
