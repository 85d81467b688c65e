"""Socket helpers shared by the hub's parts, so that none of them imports the WebSocket server."""
from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def abort(connection: Any) -> None:
    """Close the TCP connection without a close frame, as the Go server does on timeouts.

    Args:
        connection: a websockets server connection (anything with ``close_socket()``).
    """
    try:
        connection.close_socket()
    except Exception:  # a connection still being built may lack its sockets; nothing to abort
        logger.debug("abort of a half-built connection failed", exc_info=True)
