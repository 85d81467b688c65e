"""The hub's connection table: one :class:`NodeSession` per pc_id, kept as the seed hub or the Go server keeps it.

Plain data, no lock and no I/O: :class:`~octohub_sync.hub.state.HubState` holds its lock
around every call and does the sending and closing itself.
"""
from __future__ import annotations

import time
from typing import Any, List, Optional


class NodeSession:
    """The hub's side of one accepted WebSocket connection of a node.

    Attributes:
        pc_id: the node's id, from the signed URL.
        ws: the server-side websockets connection (anything with ``send`` and ``close_socket``).
        info: the public record in :attr:`LocalHub.connections`: pc_id, opened and closed
            (monotonic, closed None while open), close_code and close_reason.
        greeted: the ``connected`` message went out; tasks are sent directly from then on.
        ready: ``node_ready`` was received on this connection.
        forgotten: the go-dialect table lost this connection while it was open.
    """

    __slots__ = ("pc_id", "ws", "info", "greeted", "ready", "forgotten")

    def __init__(self, pc_id: str, ws: Any) -> None:
        self.pc_id = pc_id
        self.ws = ws
        self.info: dict[str, Any] = {
            "pc_id": pc_id, "opened": time.monotonic(), "closed": None, "close_code": None, "close_reason": None
        }
        self.greeted = False
        self.ready = False
        self.forgotten = False


class ConnectionTable:
    """pc_id -> the one :class:`NodeSession` the hub sends to, plus every session still open.

    Args:
        remove_by_pc_id: the Go server's rule (docs/protocol.md §5). When a connection ends, its
            pc_id's entry is removed whichever connection it holds, so the end of a replaced
            connection forgets the newer one. False: the seed hub's rule, an entry is removed
            only by the end of its own connection.
    """

    def __init__(self, *, remove_by_pc_id: bool) -> None:
        self._remove_by_pc_id = remove_by_pc_id
        self._entries: dict[str, NodeSession] = {}
        self._open: set[NodeSession] = set()
        self._last_pc_id: Optional[str] = None

    @property
    def last_pc_id(self) -> Optional[str]:
        """The pc_id that connected most recently (None before the first connection)."""
        return self._last_pc_id

    def add(self, session: NodeSession) -> Optional[NodeSession]:
        """Enter a new connection.

        Returns:
            The entry it replaces, which the caller evicts; None if the pc_id had none.
        """
        old = self._entries.get(session.pc_id)
        self._entries[session.pc_id] = session
        self._open.add(session)
        self._last_pc_id = session.pc_id
        return old

    def remove(self, session: NodeSession) -> Optional[NodeSession]:
        """A connection ended: drop it, and its pc_id's entry as the chosen rule says.

        Returns:
            The open session that the Go rule forgot (now marked ``forgotten``), else None.
        """
        self._open.discard(session)
        entry = self._entries.get(session.pc_id)
        if entry is None or (entry is not session and not self._remove_by_pc_id):
            return None
        del self._entries[session.pc_id]
        if entry is session:
            return None
        entry.forgotten = True
        return entry

    def known(self, pc_id: Optional[str] = None) -> List[NodeSession]:
        """The sessions in the table (of one pc_id, or all)."""
        if pc_id is None:
            return list(self._entries.values())
        session = self._entries.get(pc_id)
        return [] if session is None else [session]

    def target(self, pc_id: Optional[str]) -> Optional[NodeSession]:
        """The session of ``pc_id``, or by default of the only/most recently connected node."""
        if pc_id is not None:
            return self._entries.get(pc_id)
        if not self._entries:
            return None
        session = self._entries.get(self._last_pc_id or "")
        return session or max(self._entries.values(), key=lambda item: item.info["opened"])

    def open_sessions(self) -> List[NodeSession]:
        """Every session whose connection has not ended, forgotten ones included."""
        return list(self._open)
