"""What the local hub recorded, read only: results, progress, messages, connections, crashes.

:class:`RecordedState` is the part of :class:`~octohub_sync.hub.core.LocalHub` that only reads its
``HubState``: tests assert on these views; nothing here changes the hub.
"""
from __future__ import annotations

from octohub_sync.hub.state import HubState

__all__ = ["RecordedState"]


class RecordedState:
    """Read-only views of a hub's :class:`HubState` (``_state``), for tests and benchmarks."""

    _state: HubState

    @property
    def results(self) -> dict[str, list[dict]]:
        """task_id -> every task_result received for it, duplicates included."""
        return self._state.results

    @property
    def progress(self) -> dict[str, list[dict]]:
        """task_id -> every task_progress received for it, in order (docs/protocol.md §3.3)."""
        return self._state.progress

    @property
    def received(self) -> list[dict]:
        """Every JSON object received from nodes, in order.

        Each has two keys added: ``_pc_id``, the node's, and ``_bytes``, the frame's size on the wire.
        """
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
        the cleanup of a replaced connection forgets the newer one (docs/protocol.md §5). A
        forgotten connection stays open, answers pings and shows ``closed`` None in its
        record, but :meth:`connected` is False for it and no task reaches it. Always empty
        in the seed dialect.
        """
        return self._state.forgotten

    @property
    def crashes(self) -> list[dict]:
        """Every crash of the WebSocket server (go dialect, ``ping_crash``): dicts of pc_id, why and
        time (monotonic). After one, nothing listens until :meth:`start_ws`."""
        return self._state.crashes

    def frames(self, opcode: str) -> int:
        """How many frames of ``opcode`` (``"ping"``, ``"pong"``, ``"text"``, ...) nodes sent (go dialect only)."""
        return self._state.frames(opcode)

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
