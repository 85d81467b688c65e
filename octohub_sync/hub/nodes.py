"""The node-facing half of :class:`~octohub_sync.hub.LocalHub`: send, drop, inspect, wait.

Kept apart from the server lifecycle in ``core.py``; everything here works on
the shared :class:`~octohub_sync.hub.state.HubState`.
"""
from __future__ import annotations

import itertools
import json
from typing import Any, Callable, List, Optional, Union

from octohub_sync.hub import messages
from octohub_sync.hub.sockets import abort
from octohub_sync.hub.state import HubState
from octohub_sync.hub.table import NodeSession

#: Upper bound, in seconds, of the waits done by drop() and close().
CLOSE_WAIT = 5.0


class NodeSessions:
    """Mixin of LocalHub: talking to connected nodes and waiting on what they did."""

    _state: HubState
    dialect: str
    _task_ids: itertools.count[int]

    # -- recorded state ----------------------------------------------------

    @property
    def results(self) -> dict[str, list[dict]]:
        """task_id -> every task_result received for it, duplicates included."""
        return self._state.results

    @property
    def received(self) -> list[dict]:
        """Every JSON object received from nodes, in order, each with an added ``_pc_id``."""
        return self._state.received

    @property
    def api_requests(self) -> list[dict]:
        """Every API request: path, params, headers, status (0: never answered), time (monotonic)."""
        return self._state.api_requests

    @property
    def connections(self) -> list[dict]:
        """Every accepted WebSocket connection.

        Each is a dict: pc_id, opened and closed (monotonic, closed None while open),
        close_code and close_reason (what the node's close frame said; 1006 if none came).
        """
        return self._state.connections

    @property
    def forgotten(self) -> list[dict]:
        """Records (from :attr:`connections`) that the go-dialect connection table lost while open.

        The Go server removes a pc_id's entry by pc_id when any of its connections ends, so
        the cleanup of a replaced connection forgets the newer one (PROTOCOL.md §5). A
        forgotten connection stays open, answers pings and shows ``closed`` None in its
        record, but :meth:`connected` is False for it and no task reaches it. Always empty
        in the seed dialect.
        """
        return self._state.forgotten

    @property
    def handshakes_rejected(self) -> int:
        """How many WebSocket handshakes were refused (400, 401, 404, 500)."""
        return self._state.handshakes_rejected

    @property
    def pending(self) -> list[str]:
        """Ids of tasks sent that have no result yet."""
        return self._state.pending_ids()

    def count(self, kind: str) -> int:
        """Number of received messages of that kind (``type``, else ``action``)."""
        return self._state.count(kind)

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
            task_id: id to use; ``task_<n>`` by default.
            timeout: optional ``timeout`` field of the message.
            pc_id: target node; default the only/most recently connected node, or, if
                none ever connected, whichever node sends ``node_ready`` first.
            extra: more top-level fields of the message.

        Returns:
            The task id. Never raises because a connection died: the task stays pending.
        """
        if task_id is None:
            task_id = f"task_{next(self._task_ids)}"
        message = messages.task(task_id, task_type, data, timeout=timeout, extra=extra)
        frame = json.dumps(message, ensure_ascii=False)
        self._state.add_task(task_id, pc_id, frame)
        return task_id

    def send_message(self, message: dict[str, Any], pc_id: Optional[str] = None) -> None:
        """Send any JSON object to a node.

        Raises:
            ConnectionError: no such node is connected, or the send failed.
        """
        self._state.send(pc_id, json.dumps(message, ensure_ascii=False))

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

        Like :meth:`close`, it reaches only connections the hub knows, not :attr:`forgotten` ones.

        Returns:
            How many connections were dropped; they are unregistered when this returns.
        """
        sessions = self._state.sessions(pc_id)
        for session in sessions:
            abort(session.ws)
        self._wait_closed(sessions)
        return len(sessions)

    def close(self, pc_id: Optional[str] = None, code: int = 1000) -> int:
        """Close the connection(s) of ``pc_id`` (or all) with a clean close handshake.

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

