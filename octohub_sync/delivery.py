"""Results on their way to the hub: sent at once, or kept in the outbox, until the hub has read them.

A result written to the socket is not yet delivered: a dead path swallows it
without an error. After sending, the node sends a ping frame; the hub's pong
proves its reader got past every frame sent before that ping (docs/protocol.md §8).
Results still unconfirmed when the connection ends go back to the outbox and are
sent again after the next ``node_ready``. Once the node has begun its own close
(:meth:`Connection.begin_close`), nothing more is written on that connection: what
comes after waits in the outbox for the next one.

Runs on worker threads (results), the connection thread (pongs, the handshake's
flush), the ledger's writer thread (results once on disk), the send thread
(sender.py: confirmations, the outbox's periodic look, results of time limits)
and the watchdog thread (nothing but :meth:`attach`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Optional

from .connection import Connection
from .ledger import MemoryStore
from .outbox import Outbox, Result
from .stats import Stats

__all__ = ["ACK_PREFIX", "CONFIRM_TIMEOUT", "ResultDelivery"]

#: Payload prefix of the ping frames that confirm delivery; the number is the last result they cover.
ACK_PREFIX = b"octohub-ack:"

#: Results that queued up while another thread sent go out together, in writes of at most this many
#: bytes (a larger result is a write of its own): one system call and one lock for several frames.
WRITE_BYTES = 64 * 1024

#: At most one confirmation ping per this many seconds from the send path: under load one ping covers
#: many results. What is sent in between is confirmed by the next ping, or by :meth:`tick`
#: (the send thread, every quarter of a second).
CONFIRM_INTERVAL = 0.05

#: A confirmation ping unanswered this long is sent again, covering everything sent since: RFC 6455
#: §5.5.3 lets a peer answer only the latest of several pings, and a pong for ping n confirms every
#: result up to n (seconds).
CONFIRM_TIMEOUT = 1.0


class ResultDelivery:
    """The current connection as seen by whoever sends on it: results, replies, ``node_ready``.

    Every result is recorded in ``store`` before it is first sent and removed from it once the
    hub confirmed it (or it was dropped), so that with a ledger nothing produced is lost across
    a restart. At most ``outbox_size`` results wait for the hub's confirmation on a connection,
    so that all of them fit back into the outbox if it drops. Beyond that the thread sending
    results waits for a pong to make room (as it would wait for a full socket buffer; the other
    results queue up behind it, none is dropped), asking again every :data:`CONFIRM_TIMEOUT`; a
    path that confirms nothing for ``confirm_deadline`` seconds is dead, and is ended.

    Args:
        outbox_size: results kept while they cannot be sent (OCTOHUB_OUTBOX_SIZE).
        store: where results wait until the hub confirms them (see ledger.py).
        post: runs a job on the send thread (``Sender.post``): how a liveness loop's result is sent.
        confirm_deadline: seconds without room for more results after which the path counts as dead.
    """

    def __init__(self, *, outbox_size: int, store: MemoryStore, stats: Stats, log: logging.LoggerAdapter,
                 post: Callable[[Callable[[], None]], None] = lambda job: job(),
                 confirm_deadline: float = 30.0) -> None:
        self._store = store
        self._stats = stats
        self._log = log
        self._post = post
        self._confirm_deadline = confirm_deadline
        self.outbox = Outbox(outbox_size)
        self.conn: Optional[Connection] = None
        self.ready = False
        #: Set while the hub has confirmed the connection and ``node_ready`` went out.
        self.connected = threading.Event()
        self._flush_lock = threading.Lock()
        # Held around writing results and recording them as unconfirmed, and by detach(): a result
        # written on a connection is in _unconfirmed before that connection's end is handled.
        self._results_lock = threading.Lock()
        # Results sent on the current connection that the hub has not confirmed, with their sending order.
        self._unconfirmed: deque[tuple[int, Result]] = deque()
        self._sent = 0                           # results sent on the current connection, numbering them
        self._ack_pending: Optional[int] = None  # number covered by the last confirmation ping unanswered
        self._pinged = 0                         # highest number a confirmation ping covered on this connection
        self._pinged_at = 0.0                    # when the last confirmation ping went out (monotonic)
        self._ack_lock = threading.Lock()        # guards the five above and ``ready``
        self._room = threading.Condition(self._ack_lock)  # notified when confirmations make room, or it ends
        # Results waiting for the thread that sends now (see _send); _sending: one is sending;
        # _holding: results that thread has taken from the queue and not handed on yet.
        self._queue: deque[Result] = deque()
        self._sending = False
        self._holding = 0
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
            self._sent = self._pinged = 0
            self._ack_pending = None
        self.connected.set()
        sent = self.flush()
        if sent:
            self._log.info("sent %d result(s) kept while disconnected", sent)

    def detach(self, conn: Connection) -> None:
        """``conn`` ended; results go to the outbox until the next ``node_ready``.

        Results sent on it that the hub never confirmed go back to the outbox, unless our close
        handshake completed: the hub answered our close frame, so it read everything before it
        (and nothing was written after it, see :meth:`Connection.begin_close`).
        """
        if conn is not self.conn:
            return
        with self._results_lock, self._ack_lock:
            self.ready = False
            self.connected.clear()
            unconfirmed = [result for _, result in self._unconfirmed]
            self._unconfirmed.clear()
            self._ack_pending = None
            self._room.notify_all()
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

    def waiting(self) -> int:
        """Results not sent yet: in the outbox, queued for the thread that sends now, or in its hands."""
        return len(self.outbox) + len(self._queue) + self._holding

    def send_or_abort(self, conn: Connection, frame: str) -> bool:
        """Send one frame; any failure ends the session (the connection is aborted).

        Returns:
            True if it was written; False if it failed, or if our close has begun (nothing is
            written after our close frame; the session goes on until the hub answers it).
        """
        return self._write(conn, [frame])

    def _write(self, conn: Connection, frames: list[str]) -> bool:
        """Send frames, in order, in one write if several; any failure ends the session."""
        try:
            return conn.send_many(frames)
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

    def deliver(self, task_id: str, frame: str, *, finished: bool = False, hand_off: bool = False) -> None:
        """Send a result now, or keep it in the outbox until the next node_ready.

        Args:
            finished: the result ends its task; the store keeps it to answer a redelivery.
            hand_off: never write on the calling thread (a liveness loop's): the send thread does.
        """
        then = self._send_later if hand_off else self._send
        self._store.add_result(task_id, frame, then, finished=finished)  # sent once it is on disk

    def _send(self, results: list[Result]) -> None:
        """Results the store holds: send them, or leave them to the thread sending now.

        One thread sends at a time and takes every result that queued up meanwhile, oldest
        first, in writes of several frames (flat combining): under load the other workers go
        back to their tasks instead of queueing up on the socket's lock, and with one task at a
        time a result is still sent by the thread that produced it, without a hand-off.
        """
        if self._enqueue(results):
            self._drain()

    def _send_later(self, results: list[Result]) -> None:
        """As :meth:`_send`, but the send thread sends them if nobody is sending now."""
        if self._enqueue(results):
            self._post(self._drain)

    def _enqueue(self, results: list[Result]) -> bool:
        """Queue results; True if the caller must now see to sending them (nobody else sends)."""
        with self._queue_lock:
            self._queue.extend(results)
            if self._sending:
                return False
            self._sending = True
            return True

    def _drain(self) -> None:
        """Send what the queue holds until it is empty (only the thread that set ``_sending``)."""
        queue = self._queue
        while True:
            with self._queue_lock:
                if not queue:
                    self._sending = False
                    return
                batch = list(queue)
                queue.clear()
                self._holding = len(batch)
            done = 0
            try:
                for chunk in _writes(batch):
                    self._send_now(chunk)
                    done += len(chunk)
                    self._holding -= len(chunk)
            finally:
                if done < len(batch):  # something raised: the rest waits in the outbox, where tick() sees it
                    for result in batch[done:]:
                        self._dropped(self.outbox.put(result))
                    with self._queue_lock:
                        self._holding = 0
                        self._sending = False

    def _send_now(self, results: list[Result]) -> None:
        """Send results now (waiting for room to wait for confirmation), or keep them in the outbox."""
        conn = self.conn
        while results and self._await_room(conn):
            if len(self.outbox):  # older results first
                if not self.flush():
                    break
                continue
            written = self._write_results(conn, results)
            if not written:
                break
            results = results[written:]
        if results:
            self._keep(results)

    def _await_room(self, conn: Optional[Connection]) -> bool:
        """(The thread sending results.) Wait while ``outbox_size`` results wait for confirmation on
        ``conn``; True once there is room, False if it is no longer ready (or is dead: then ended)."""
        capacity = self.outbox.capacity
        if len(self._unconfirmed) < capacity:
            return True  # the common case, without a lock
        deadline = time.monotonic() + self._confirm_deadline
        while True:
            with self._room:
                ping = None
                while ping is None:
                    if not self.ready or conn is not self.conn:
                        return False
                    if len(self._unconfirmed) < capacity:
                        return True
                    now = time.monotonic()
                    if now >= deadline:
                        break
                    ping = self._claim_ping(now, 0.0)  # asked again every CONFIRM_TIMEOUT
                    if ping is None:
                        self._room.wait(min(CONFIRM_TIMEOUT, deadline - now))
            if ping is None:
                self._log.warning("the hub confirmed none of the last %d results for %.0f s: the path is dead; "
                                  "reconnecting", capacity, self._confirm_deadline)
                conn.abort()  # type: ignore[union-attr]
                return False
            self._ask_confirmation(conn, ping)  # type: ignore[arg-type]

    def _keep(self, results: list[Result]) -> None:
        """Put results in the outbox; if the connection is ready, the outbox is sent now (no result
        waits there for the next one to come along)."""
        for result in results:
            self._dropped(self.outbox.put(result))
        if self.ready:
            self.flush()

    def flush(self) -> int:
        """Send what the outbox holds, oldest first, while the connection takes it; return how many went."""
        with self._flush_lock:
            items = self.outbox.take_all()
            done = 0
            for chunk in _writes(items):
                written = self._write_results(self.conn, chunk)
                done += written
                if written < len(chunk):
                    self._dropped(self.outbox.put_back(items[done:]))
                    break
            return done

    def tick(self) -> None:
        """The send thread's periodic look: send what waits in the outbox while the connection is
        ready, and ask the hub to confirm what was sent since the last ping."""
        if self.ready and len(self.outbox) and not self._flush_lock.locked():
            self.flush()
        conn = self.conn
        with self._ack_lock:
            ping = self._claim_ping(time.monotonic(), 0.0) if self.ready and conn is self.conn else None
        if ping is not None and conn is not None:
            self._ask_confirmation(conn, ping)

    def _write_results(self, conn: Optional[Connection], results: list[Result]) -> int:
        """Write as many of ``results`` as the connection takes now, record them as unconfirmed,
        and ask for confirmation; return how many were written (the rest is the caller's)."""
        ping = None
        with self._results_lock:
            room = self.outbox.capacity - len(self._unconfirmed)
            if not self.ready or conn is None or conn is not self.conn or room <= 0:
                written = 0
            else:
                batch = results[:room]
                written = len(batch) if self._write(conn, [result.frame for result in batch]) else 0
                if not written and conn.closing_since is not None:
                    with self._room:
                        self.ready = False  # our close has begun: nothing more goes out on this connection
                        self._room.notify_all()
            if written:
                with self._ack_lock:
                    for result in results[:written]:
                        self._sent += 1
                        self._unconfirmed.append((self._sent, result))
                    full = len(self._unconfirmed) >= self.outbox.capacity
                    ping = self._claim_ping(time.monotonic(), 0.0 if full else CONFIRM_INTERVAL)
        if ping is not None:
            self._ask_confirmation(conn, ping)  # type: ignore[arg-type]
        return written

    def _claim_ping(self, now: float, interval: float) -> Optional[int]:
        """(Lock held.) The number a confirmation ping should cover now, if one should go out."""
        if not self._unconfirmed:
            return None
        if self._ack_pending is not None:
            if now - self._pinged_at < CONFIRM_TIMEOUT:
                return None  # its pong is on its way; if it never comes, the next ping covers it
        elif now - self._pinged_at < interval:
            return None
        self._ack_pending = self._pinged = self._unconfirmed[-1][0]
        self._pinged_at = now
        return self._ack_pending

    def _ask_confirmation(self, conn: Connection, number: int) -> None:
        try:
            conn.ping(ACK_PREFIX + str(number).encode())
        except Exception as exc:  # like any failed send: the session is over
            self._log.info("ping failed (%s: %s); dropping the connection", type(exc).__name__, exc)
            conn.abort()

    def pong(self, conn: Connection, payload: bytes) -> None:
        """A pong arrived (connection thread): confirm every result up to the number it carries."""
        if not payload.startswith(ACK_PREFIX):
            return  # a keep-alive pong
        try:
            number = int(payload[len(ACK_PREFIX):])
        except ValueError:
            return
        with self._ack_lock:
            if conn is not self.conn or not 0 < number <= self._pinged:
                return  # another connection's, or no ping of ours on this one said that
            unconfirmed = self._unconfirmed
            confirmed = []
            while unconfirmed and unconfirmed[0][0] <= number:
                confirmed.append(unconfirmed.popleft()[1].seq)
            if self._ack_pending is not None and number >= self._ack_pending:
                self._ack_pending = None
            if confirmed:
                self._room.notify_all()
            again = self._claim_ping(time.monotonic(), CONFIRM_INTERVAL)
        self._store.remove_results(confirmed)
        if again is not None:
            self._ask_confirmation(conn, again)
        if confirmed and self.ready and len(self.outbox):
            self.flush()  # results that waited for room

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
