"""Results on their way to the hub: sent at once, or kept in the outbox, until the hub has read them.

A result written to the socket is not yet delivered: a dead path swallows it
without an error. After sending, the node sends a ping frame; the hub's pong
proves its reader got past every frame sent before that ping (docs/protocol.md §8).
Results still unconfirmed when the connection ends go back to the outbox and are
sent again after the next ``node_ready``.

Runs on worker threads (results), the connection thread (pongs, the handshake's
flush) and the watchdog thread (nothing but :meth:`attach`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Optional

from .connection import Connection
from .store import MemoryStore
from .outbox import Outbox, Result
from .stats import Stats

__all__ = ["ACK_PREFIX", "ResultDelivery"]

#: Payload prefix of the ping frames that confirm delivery; the number is the last result they cover.
ACK_PREFIX = b"octohub-ack:"

#: Results that queued up while another thread sent go out together, in writes of at most this many
#: bytes (a larger result is a write of its own): one system call and one lock for several frames.
WRITE_BYTES = 64 * 1024

#: At most one confirmation ping per this many seconds from the send path: under load one ping covers
#: many results. What is sent in between is confirmed by the next ping, or by :meth:`confirm_due`
#: (the timers thread), so a result waits at most about a quarter of a second for its confirmation.
CONFIRM_INTERVAL = 0.05


class ResultDelivery:
    """The current connection as seen by whoever sends on it: results, replies, ``node_ready``.

    Every result is recorded in ``store`` before it is first sent and removed from it once the
    hub confirmed it (or it was dropped), so that with a ledger nothing produced is lost across
    a restart.

    Args:
        outbox_size: results kept while they cannot be sent (OCTOHUB_OUTBOX_SIZE).
        store: where results wait until the hub confirms them (see ledger.py).
    """

    def __init__(self, *, outbox_size: int, store: MemoryStore, stats: Stats, log: logging.LoggerAdapter) -> None:
        self._store = store
        self._stats = stats
        self._log = log
        self.outbox = Outbox(outbox_size)
        self.conn: Optional[Connection] = None
        self.ready = False
        #: Set while the hub has confirmed the connection and ``node_ready`` went out.
        self.connected = threading.Event()
        self._flush_lock = threading.Lock()
        # Results sent on the current connection that the hub has not confirmed, with their sending order.
        self._unconfirmed: deque[tuple[int, Result]] = deque()
        self._sent = 0                           # results sent on the current connection, numbering them
        self._ack_pending: Optional[int] = None  # number covered by the confirmation ping in flight
        self._pinged_at = 0.0                    # when the last confirmation ping went out (monotonic)
        self._ack_lock = threading.Lock()        # guards the four above and ``ready``
        # Results waiting for the thread that sends now (see _send); _sending: one is sending.
        self._queue: deque[Result] = deque()
        self._sending = False
        self._queue_lock = threading.Lock()

    # -- the connection's life ------------------------------------------------------------------

    def restore(self, pending: list[tuple[int, str, str]]) -> None:
        """Queue the results a ledger held at start, oldest first, for the first ``node_ready``.

        Results already in the outbox (a node started again after a stop) are not queued twice.
        """
        merged = {result.seq: result for result in (Result(*item) for item in pending)}
        merged.update((result.seq, result) for result in self.outbox.take_all())
        self._dropped(self.outbox.put_back(sorted(merged.values())))

    def attach(self, conn: Connection) -> None:
        """Make ``conn`` the current connection (not ready until :meth:`mark_ready`)."""
        self.conn = conn

    def mark_ready(self) -> None:
        """``node_ready`` went out on the current connection: send what the outbox holds."""
        with self._ack_lock:
            self.ready = True
            self._sent = 0
        self.connected.set()
        self.flush()

    def detach(self, conn: Connection) -> None:
        """``conn`` ended; results go to the outbox until the next ``node_ready``.

        Results sent on it that the hub never confirmed go back to the outbox, unless our close
        handshake completed: the hub answered our close frame, so it read everything before it.
        """
        if conn is not self.conn:
            return
        with self._ack_lock:
            self.ready = False
            self.connected.clear()
            unconfirmed = [result for _, result in self._unconfirmed]
            self._unconfirmed.clear()
            self._ack_pending = None
        if not unconfirmed:
            return
        if conn.closed_cleanly:
            self._store.remove_results(result.seq for result in unconfirmed)
            return
        self._stats.incr("results_resent", len(unconfirmed))
        self._log.info("%d result(s) sent but not confirmed by the hub will be sent again after reconnecting",
                       len(unconfirmed))
        self._dropped(self.outbox.put_back(unconfirmed))

    def close(self) -> None:
        """The node stopped."""
        self.ready = False
        self.connected.clear()

    def unconfirmed(self) -> int:
        """How many results were sent on the current connection without the hub's confirmation yet."""
        return len(self._unconfirmed)

    def send_or_abort(self, conn: Connection, frame: str) -> bool:
        """Send one frame; any failure ends the session (the connection is aborted)."""
        return self._write(conn, [frame])

    def _write(self, conn: Connection, frames: list[str]) -> bool:
        """Send frames, in order, in one write if several; any failure ends the session."""
        try:
            conn.send_many(frames)
            return True
        except Exception as exc:  # any send failure means the session is over
            self._log.info("send failed (%s: %s); dropping the connection", type(exc).__name__, exc)
            conn.abort()
            return False

    def send_progress(self, frame: str) -> bool:
        """Send a ``task_progress`` frame if the connection is ready; otherwise drop it.

        Progress is best-effort (docs/protocol.md §3.3): never kept in the outbox, never
        confirmed, never sent again. A failed send ends the session, as for any frame.

        Returns:
            True if it was written to the socket.
        """
        conn = self.conn
        return self.ready and conn is not None and self.send_or_abort(conn, frame)

    # -- results ----------------------------------------------------------------------------------

    def deliver(self, task_id: str, frame: str, *, finished: bool = False) -> None:
        """Send a result now, or keep it in the outbox until the next node_ready.

        Args:
            finished: the result ends its task; the store keeps it to answer a redelivery.
        """
        self._store.add_result(task_id, frame, self._send, finished=finished)  # sent once it is on disk

    def _send(self, results: list[Result]) -> None:
        """Results the store holds: send them, or leave them to the thread sending now.

        One thread sends at a time and takes every result that queued up meanwhile, oldest
        first, in writes of several frames (flat combining): under load the other workers go
        back to their tasks instead of queueing up on the socket's lock, and with one task at a
        time a result is still sent by the thread that produced it, without a hand-off.
        """
        queue = self._queue
        with self._queue_lock:
            queue.extend(results)
            if self._sending:
                return
            self._sending = True
        while True:
            with self._queue_lock:
                if not queue:
                    self._sending = False
                    return
                batch = list(queue)
                queue.clear()
            done = 0
            try:
                for chunk in _writes(batch):
                    self._send_now(chunk)
                    done += len(chunk)
            finally:
                if done < len(batch):  # something raised: the next result's thread sends the rest
                    with self._queue_lock:
                        queue.extendleft(reversed(batch[done:]))
                        self._sending = False

    def _send_now(self, results: list[Result]) -> None:
        """Send results now, in one write, or keep them in the outbox."""
        conn = self.conn
        if self.ready and conn is not None and not len(self.outbox) and \
                self._write(conn, [result.frame for result in results]):
            self._track(conn, results)
            return
        for result in results:
            self._dropped(self.outbox.put(result))
        if self.ready:
            self.flush()

    def flush(self) -> None:
        """Send what the outbox holds, oldest first, while the connection takes it."""
        with self._flush_lock:
            items = self.outbox.take_all()
            done = 0
            for chunk in _writes(items):
                conn = self.conn
                if not self.ready or conn is None or not self._write(conn, [result.frame for result in chunk]):
                    self._dropped(self.outbox.put_back(items[done:]))
                    return
                self._track(conn, chunk)
                done += len(chunk)
            if items:
                self._log.info("sent %d result(s) kept while disconnected", len(items))

    def _track(self, conn: Connection, results: list[Result]) -> None:
        """Remember results written to ``conn`` until the hub confirms them; ask for confirmation."""
        ping = None
        with self._ack_lock:
            current = self.ready and conn is self.conn
            if current:
                for result in results:
                    self._sent += 1
                    self._unconfirmed.append((self._sent, result))
                ping = self._claim_ping(time.monotonic())
        if not current:  # the connection ended while we sent: detach() could not see these results
            for result in results:
                self._dropped(self.outbox.put(result))
        elif ping is not None:
            self._ask_confirmation(conn, ping)

    def _claim_ping(self, now: float, interval: float = CONFIRM_INTERVAL) -> Optional[int]:
        """(Lock held.) The number a confirmation ping should cover now, if one should go out."""
        if self._ack_pending is not None or not self._unconfirmed or now - self._pinged_at < interval:
            return None
        self._ack_pending = self._unconfirmed[-1][0]
        self._pinged_at = now
        return self._ack_pending

    def confirm_due(self, now: float) -> None:
        """Ask the hub to confirm what was sent since the last ping (called by the timers thread)."""
        conn = self.conn
        with self._ack_lock:
            ping = self._claim_ping(now, 0.0) if self.ready and conn is self.conn else None
        if ping is not None and conn is not None:
            self._ask_confirmation(conn, ping)

    def _ask_confirmation(self, conn: Connection, number: int) -> None:
        try:
            conn.ping(ACK_PREFIX + str(number).encode())
        except Exception as exc:  # like any failed send: the session is over
            self._log.info("ping failed (%s: %s); dropping the connection", type(exc).__name__, exc)
            conn.abort()

    def pong(self, conn: Connection, payload: bytes) -> None:
        """A pong arrived (connection thread): confirm the results its ping covered."""
        if not payload.startswith(ACK_PREFIX):
            return  # a keep-alive pong
        try:
            number = int(payload[len(ACK_PREFIX):])
        except ValueError:
            return
        with self._ack_lock:
            if conn is not self.conn or number != self._ack_pending:
                return
            unconfirmed = self._unconfirmed
            confirmed = []
            while unconfirmed and unconfirmed[0][0] <= number:
                confirmed.append(unconfirmed.popleft()[1].seq)
            self._ack_pending = None
            again = self._claim_ping(time.monotonic())
        self._store.remove_results(confirmed)
        if again is not None:
            self._ask_confirmation(conn, again)

    def _dropped(self, results: list[Result]) -> None:
        if not results:
            return
        self._store.remove_results(result.seq for result in results)
        self._stats.incr("results_dropped", len(results))
        self._log.warning("outbox full (OCTOHUB_OUTBOX_SIZE=%d): dropped the result of task(s) %s",
                          self.outbox.capacity, ", ".join(result.task_id for result in results[:10]))


def _writes(results: list[Result]) -> list[list[Result]]:
    """Consecutive results grouped into writes of at most WRITE_BYTES (a larger one alone)."""
    writes: list[list[Result]] = []
    size = WRITE_BYTES
    for result in results:
        if size + len(result.frame) > WRITE_BYTES:
            writes.append([])
            size = 0
        writes[-1].append(result)
        size += len(result.frame)
    return writes
