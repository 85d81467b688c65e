"""The Go server's read deadline (PROTOCOL.md §4): drop connections that stopped pinging."""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from octohub_sync.hub.sockets import abort
from octohub_sync.hub.state import HubState

logger = logging.getLogger(__name__)


class ReadDeadline:
    """One daemon thread that aborts every connection whose last ping frame is too old.

    It sleeps until the earliest deadline among the live connections; pings only
    push deadlines later, so waking early and re-checking is always correct.
    """

    def __init__(self, state: HubState, seconds: float) -> None:
        self._state = state
        self._seconds = seconds
        self._wake = threading.Event()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hub-ws-deadline", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A connection was added: re-plan the next wake-up."""
        self._wake.set()

    def stop(self, timeout: float) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            self._wake.wait(self._check())

    def _check(self) -> Optional[float]:
        """Abort the expired connections; return seconds until the next deadline (None: none)."""
        now = time.monotonic()
        next_due: Optional[float] = None
        for link in self._state.open_links():  # forgotten connections too: each has its own deadline
            due = getattr(link.ws, "last_ping", now) + self._seconds
            if due <= now:
                logger.info(
                    "read deadline: no ping frame from %s for %.1f s, dropping it", link.pc_id, self._seconds
                )
                abort(link.ws)
            elif next_due is None or due < next_due:
                next_due = due
        return None if next_due is None else next_due - now
