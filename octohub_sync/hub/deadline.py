"""The Go server's read deadline (docs/protocol.md §4): drop connections that stopped pinging."""
from __future__ import annotations

import enum
import logging
import threading
import time
from typing import Callable, List, Optional, Union

from octohub_sync.hub import messages
from octohub_sync.hub.sockets import abort
from octohub_sync.hub.table import NodeSession

logger = logging.getLogger(__name__)

#: The Go server's read deadline in seconds (docs/protocol.md §4), the go dialect's default.
GO_READ_DEADLINE = 60.0


class ByDialect(enum.Enum):
    """Type of :data:`BY_DIALECT` (an Enum member, so that type checkers know the sentinel)."""

    DEFAULT = "by dialect"


#: Default of ``LocalHub(read_deadline=...)``: the dialect decides.
BY_DIALECT = ByDialect.DEFAULT


def read_deadline_for(dialect: str, value: Union[float, None, ByDialect] = BY_DIALECT) -> Optional[float]:
    """The read deadline in seconds, or None for none.

    Args:
        dialect: ``"go"`` defaults to :data:`GO_READ_DEADLINE`, ``"seed"`` to none.
        value: an explicit number wins; 0 or None means none.

    Raises:
        ValueError: a negative value.
    """
    if value is BY_DIALECT:
        return GO_READ_DEADLINE if dialect == messages.GO else None
    if value is not None and value < 0:
        raise ValueError(f"read_deadline must be >= 0 or None, not {value!r}")
    return value or None


class ReadDeadline:
    """One daemon thread that aborts every connection whose last ping frame is too old.

    It sleeps until the earliest deadline among the live connections; pings only
    push deadlines later, so waking early and re-checking is always correct.

    Args:
        sessions: returns the sessions still open (each ``ws`` has ``last_ping``, monotonic).
        seconds: how long a connection may go without a ping frame.
    """

    def __init__(self, sessions: Callable[[], List[NodeSession]], seconds: float) -> None:
        self._sessions = sessions
        self._seconds = seconds
        self._wake = threading.Event()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        # Daemon: a test hub must never keep a process alive; stop() joins it.
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
        for session in self._sessions():  # forgotten ones too: each connection has its own deadline
            due = getattr(session.ws, "last_ping", now) + self._seconds
            if due <= now:
                logger.info(
                    "read deadline: no ping frame from %s for %.1f s, dropping it", session.pc_id, self._seconds
                )
                abort(session.ws)
            elif next_due is None or due < next_due:
                next_due = due
        return None if next_due is None else next_due - now
