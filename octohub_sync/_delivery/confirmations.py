"""Results sent on one connection that the hub has not confirmed yet, and the pings that ask it to.

After results go out the node sends a ping frame ``octohub-ack:<n>``; the hub's pong proves
its reader got past every frame before that ping, so it confirms every result numbered up to
``n`` (docs/protocol.md §8). A ping unanswered for :data:`CONFIRM_TIMEOUT` is sent again,
covering everything since: RFC 6455 §5.5.3 lets a peer answer only the latest of several
pings. At most ``capacity`` results wait for confirmation at once. No I/O here: the caller
sends the pings this decides on.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Optional, Union

from .outbox import Result

__all__ = ["CONFIRM_INTERVAL", "CONFIRM_TIMEOUT", "Confirmations"]

#: At most one confirmation ping per this many seconds from the send path: under load one ping covers
#: many results. What is sent in between is confirmed by the next ping, or by the send thread's
#: tick (every quarter of a second).
CONFIRM_INTERVAL = 0.05

#: A confirmation ping unanswered this long is sent again, covering everything sent since (seconds).
CONFIRM_TIMEOUT = 1.0

#: What :meth:`Confirmations.wait_for_room` found: room, the connection unusable, a deadline passed,
#: or the number a ping must cover before waiting on.
ROOM, GONE, DEAD = "room", "gone", "dead"


class Confirmations:
    """The unconfirmed results of the current connection, numbered in sending order. Thread-safe.

    Args:
        capacity: at most this many results wait for confirmation (OCTOHUB_OUTBOX_SIZE: all of
            them fit back into the outbox if the connection drops).
    """

    def __init__(self, *, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # notified when confirmations make room, or it ends
        self._results: deque[tuple[int, Result]] = deque()
        self._sent = 0                           # results sent on this connection, numbering them
        self._pending: Optional[int] = None      # number covered by the last ping still unanswered
        self._pinged = 0                         # highest number a ping covered on this connection
        self._pinged_at = 0.0                    # when the last ping went out (monotonic)

    def __len__(self) -> int:
        return len(self._results)

    def room(self) -> int:
        """How many more results may wait for confirmation now."""
        return self.capacity - len(self._results)

    def reset(self) -> list[Result]:
        """A connection starts or ends: forget everything, return the results still unconfirmed."""
        with self._room:
            results = [result for _, result in self._results]
            self._results.clear()
            self._sent = self._pinged = 0
            self._pending = None
            self._room.notify_all()
        return results

    def wake(self) -> None:
        """Make a thread waiting for room look again (the connection stopped taking results)."""
        with self._room:
            self._room.notify_all()

    def add(self, results: list[Result], now: float) -> Optional[int]:
        """Results were written; return the number a ping should cover now, if one should go out."""
        with self._lock:
            for result in results:
                self._sent += 1
                self._results.append((self._sent, result))
            return self._claim(now, 0.0 if len(self._results) >= self.capacity else CONFIRM_INTERVAL)

    def claim(self, now: float) -> Optional[int]:
        """The number a ping should cover now (the periodic look), if one should go out."""
        with self._lock:
            return self._claim(now, 0.0)

    def _claim(self, now: float, interval: float) -> Optional[int]:
        if not self._results:
            return None
        if self._pending is not None:
            if now - self._pinged_at < CONFIRM_TIMEOUT:
                return None  # its pong is on its way; if it never comes, the next ping covers it
        elif now - self._pinged_at < interval:
            return None
        self._pending = self._pinged = self._results[-1][0]
        self._pinged_at = now
        return self._pending

    def confirm(self, number: int, now: float) -> tuple[list[int], Optional[int]]:
        """A pong for ping ``number``: the seqs it confirms, and the number the next ping should cover."""
        with self._lock:
            if not 0 < number <= self._pinged:
                return [], None  # no ping of ours on this connection said that
            confirmed = []
            while self._results and self._results[0][0] <= number:
                confirmed.append(self._results.popleft()[1].seq)
            if self._pending is not None and number >= self._pending:
                self._pending = None
            if confirmed:
                self._room.notify_all()
            return confirmed, self._claim(now, CONFIRM_INTERVAL)

    def wait_for_room(self, usable: Callable[[], bool], until: float,
                      clock: Callable[[], float]) -> Union[str, int]:
        """Wait while ``capacity`` results wait for confirmation.

        Returns:
            ROOM; GONE once ``usable()`` is false; DEAD at ``until``; or the number a ping must
            cover first (send it, then call again).
        """
        with self._room:
            while True:
                if not usable():
                    return GONE
                if len(self._results) < self.capacity:
                    return ROOM
                now = clock()
                if now >= until:
                    return DEAD
                ping = self._claim(now, 0.0)
                if ping is not None:
                    return ping
                self._room.wait(min(CONFIRM_TIMEOUT, until - now))
