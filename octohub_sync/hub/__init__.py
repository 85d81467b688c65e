"""A local OctoHub hub (API + WebSocket servers) for tests, demos and benchmarks.

Example::

    with LocalHub("my-key") as hub:
        ...  # point a node at hub.api_url
        task_id = hub.send_task("echo", {"x": 1})
        result = hub.wait_result(task_id)

How it is built: :class:`LocalHub` (``core.py``) owns a ``HubState`` (``state.py``: what the hub
knows and saw; its connection table, ``table.py``, follows the seed's or the Go server's rule) and
``HubServers`` (``servers.py``), which hand that state and the settings each part uses to
``api_server.py``, ``ws_server.py`` and ``deadline.py``. ``messages.py`` says what is sent;
``sockets.py`` holds the socket helpers they share.
"""
from __future__ import annotations

from octohub_sync.hub.core import API_FAULTS, WS_FAULTS, LocalHub
from octohub_sync.hub.deadline import GO_READ_DEADLINE
from octohub_sync.hub.table import NodeSession

__all__ = ["API_FAULTS", "GO_READ_DEADLINE", "LocalHub", "NodeSession", "WS_FAULTS"]
