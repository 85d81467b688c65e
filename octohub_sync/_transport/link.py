"""The current connection: which one it is, and whether ``node_ready`` went out on it.

One :class:`Link` per node holds both facts; everything else asks it. The watchdog,
which alone starts connections, says which one is current (:meth:`Link.attach`); the
delivery, which sends ``node_ready`` and sees the connection's end and our own close,
says whether it is ready (:meth:`Link.set_ready`). Readers take the plain attributes
(:attr:`Link.conn`, :attr:`Link.ready`: one attribute load on the busiest path) or
wait for readiness (:meth:`Link.wait_ready`).
"""
from __future__ import annotations

import threading
from typing import Optional

from .connection import Connection

__all__ = ["Link"]


class Link:
    """The node's current connection and whether it is ready for tasks and results.

    Attributes:
        conn: the connection attempt the watchdog started last, None between two attempts.
        ready: ``node_ready`` went out on ``conn``, which has neither ended nor begun our close.
    """

    __slots__ = ("conn", "ready", "_ready_event")

    def __init__(self) -> None:
        self.conn: Optional[Connection] = None
        self.ready = False
        self._ready_event = threading.Event()  # set exactly while ``ready``: what waiters wait on

    def attach(self, conn: Optional[Connection]) -> None:
        """(The watchdog.) ``conn`` is the current connection now (None: none); it is ready only once
        the delivery says so (the previous one's end already said it is not)."""
        self.conn = conn

    def set_ready(self, ready: bool) -> None:
        """(The delivery.) The current connection is ready (``node_ready`` went out) or no longer is."""
        self.ready = ready
        if ready:
            self._ready_event.set()
        else:
            self._ready_event.clear()

    def is_current(self, conn: Optional[Connection]) -> bool:
        """Is ``conn`` the current connection, and ready?"""
        return self.ready and conn is not None and conn is self.conn

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Block until the current connection is ready; False if ``timeout`` passed first."""
        return self._ready_event.wait(timeout)
