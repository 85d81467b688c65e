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
(_transport/sender.py: confirmations, the outbox's periodic look, results of time limits).
Which connection is current is the link's (_transport/link.py, attached by the watchdog).

Why one module: sending a result, recording it unconfirmed and moving it back to the outbox when its
connection ends happen under one lock (``_results_lock``); the parts that need no lock are already
apart (outbox.py, confirmations.py, flat_combining.py, _transport/link.py).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Optional

from .._ops.stats import Stats
from .._transport.connection import Connection
from .._transport.link import Link
from .confirmations import CONFIRM_TIMEOUT, DEAD, ROOM, Confirmations
from .flat_combining import SendQueue
from .outbox import Outbox, Result
from .store import MemoryStore

__all__ = ["ACK_PREFIX", "CONFIRM_TIMEOUT", "ResultDelivery"]

#: Payload prefix of the ping frames that confirm delivery; the number is the last result they cover.
ACK_PREFIX = b"octohub-ack:"

#: Results that queued up while another thread sent go out together, in writes of at most this many
#: bytes (a larger result is a write of its own): one system call and one lock for several frames.
WRITE_BYTES = 64 * 1024

#: Replies (the answers to the hub's JSON pings) waiting for the send thread, in characters at most: a
#: hub that floods pings and reads nothing costs no more than this. Beyond it a reply is dropped; the
#: hub, if it still listens, asks again.
MAX_REPLY_BYTES = 1 << 20

class ResultDelivery:
    """Sends on the current connection (``link``, _transport/link.py): results, replies, ``node_ready``.

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
        wake: tells the timers loop that results wait for confirmation (its look at them is due soon:
            ``Alarm.ring``, _node/timers.py).
        confirm_deadline: seconds without room for more results after which the path counts as dead.
        link: the node's current connection (the watchdog attaches each one); this class says when
            it is ready and when it no longer is.
    """

    def __init__(self, *, outbox_size: int, store: MemoryStore, stats: Stats, log: logging.LoggerAdapter,
                 post: Callable[[Callable[[], object]], object] = lambda job: job(),
                 confirm_deadline: float = 30.0, link: Optional[Link] = None,
                 wake: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._stats = stats
        self._log = log
        self._confirm_deadline = confirm_deadline
        self._post = post
        self._wake = wake
        self.outbox = Outbox(outbox_size)
        self.link = Link() if link is None else link
        self._flush_lock = threading.Lock()
        # Held around writing results and recording them as unconfirmed, and by whatever changes
        # the link's ``ready``: a result written on a connection is recorded before that connection's end is handled.
        self._results_lock = threading.Lock()
        #: Results sent on the current connection that the hub has not confirmed (confirmations.py).
        self.confirmations = Confirmations(capacity=outbox_size)
        self._awaiting = 0  # results in the hands of a sending thread that waits for room (_await_room)
        self._queue = SendQueue(send=self._send_now, chunks=_writes, keep=self._put_aside, post=post)
        self._replies_lock = threading.Lock()
        self._replies: deque[tuple[Connection, str]] = deque()
        self._reply_chars = 0  # of the frames in _replies
        self._dropping_replies = False

    # -- the connection's life ------------------------------------------------------------------

    def restore(self, pending: list[tuple[int, str, str]]) -> None:
        """Queue the results a ledger held at start, oldest first, for the first ``node_ready``.

        Results already in the outbox (a node started again after a stop) are not queued twice.
        """
        merged = {result.seq: result for result in (Result(*item) for item in pending)}
        merged.update((result.seq, result) for result in self.outbox.take_all())
        self._dropped(self.outbox.put_back(sorted(merged.values())))

    def mark_ready(self) -> None:
        """``node_ready`` went out on the current connection: the send thread sends what the outbox holds.

        Not the connection thread, which called this: it must go on reading while the outbox goes
        out (the hub may be writing to us meanwhile, and some hubs read nothing while they wait to write).
        """
        with self._results_lock:
            self.confirmations.reset()
            self.link.set_ready(True)
        if len(self.outbox):
            self._post(self._send_kept)

    def _send_kept(self) -> None:
        sent = self.send_outbox()
        if sent:
            self._log.info("sent %d result(s) kept while disconnected", sent)

    def detach(self, conn: Connection) -> None:
        """``conn`` ended; results go to the outbox until the next ``node_ready``.

        Results sent on it that the hub never confirmed go back to the outbox, unless our close
        handshake completed: the hub answered our close frame, so it read everything before it
        (and nothing was written after it, see :meth:`Connection.begin_close`).
        """
        if conn is not self.link.conn:
            return
        with self._results_lock:
            self.link.set_ready(False)
            unconfirmed = self.confirmations.reset()
        if not unconfirmed:
            return
        if conn.closed_cleanly:
            self._store.remove_results(result.seq for result in unconfirmed)
            return
        self._stats.incr("results_resent", len(unconfirmed))
        self._log.info("%d result(s) sent but not confirmed by the hub will be sent again after reconnecting",
                       len(unconfirmed))
        self._dropped(self.outbox.put_back(unconfirmed))

    def unconfirmed(self) -> int:
        """How many results were sent on the current connection without the hub's confirmation yet."""
        return len(self.confirmations)

    def waiting(self) -> int:
        """Results not sent yet: in the outbox, queued for the thread that sends now, or waiting with it for room."""
        return len(self.outbox) + len(self._queue) + self._awaiting

    def unsent(self) -> list[str]:
        """The tasks of the results in the outbox or the queue (not those a waiting sender holds)."""
        return self.outbox.task_ids() + self._queue.task_ids()

    def reply(self, conn: Connection, frame: str) -> None:
        """Answer the hub on the send thread (the connection thread, which reads, never waits for a write).

        At most :data:`MAX_REPLY_BYTES` of replies wait; one that finds no room is dropped, with a
        warning when dropping begins.
        """
        with self._replies_lock:
            room = self._reply_chars + len(frame) <= MAX_REPLY_BYTES
            warn = not room and not self._dropping_replies
            if room:
                self._replies.append((conn, frame))
                self._reply_chars += len(frame)
            else:
                self._dropping_replies = True
        if warn:
            self._log.warning("the hub sends pings faster than it reads their answers: over %d KiB of answers "
                              "wait; dropping answers until they are sent", MAX_REPLY_BYTES // 1024)
        if room:
            self._post(self._send_replies)

    def _send_replies(self) -> None:
        """(The send thread.) Send the waiting replies, oldest first."""
        while True:
            with self._replies_lock:
                if not self._replies:
                    self._dropping_replies = False  # a drop after this warns again
                    return
                conn, frame = self._replies.popleft()
                self._reply_chars -= len(frame)
            self.send_or_abort(conn, frame)

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
        conn = self.link.conn
        return self.link.ready and conn is not None and self.send_or_abort(conn, frame)

    # -- results ----------------------------------------------------------------------------------

    def deliver(self, task_id: str, frame: str, *, finished: bool = False, hand_off: bool = False) -> None:
        """Send a result now, or keep it in the outbox until the next node_ready.

        Args:
            finished: the result ends its task; the store keeps it to answer a redelivery.
            hand_off: never write on the calling thread (a liveness loop's): the send thread does.
        """
        then = self._queue.put_later if hand_off else self._queue.put
        self._store.add_result(task_id, frame, then, finished=finished)  # sent once it is on disk

    def _send_now(self, results: list[Result]) -> None:
        """Send results now (waiting for room to wait for confirmation), or keep them in the outbox."""
        conn = self.link.conn
        while results and conn is not None and self._await_room(conn, len(results)):
            if len(self.outbox):  # older results first
                if not self.send_outbox():
                    break
                continue
            written = self._write_results(conn, results)
            if not written:
                break
            results = results[written:]
        if results:
            self._keep(results)

    def _await_room(self, conn: Connection, holding: int) -> bool:
        """(The thread sending results.) Wait while ``outbox_size`` results wait for confirmation on
        ``conn``; True once there is room, False if it is no longer ready (or is dead: then ended)."""
        if self.confirmations.room() > 0:
            return True  # the common case, without a lock
        until = time.monotonic() + self._confirm_deadline
        self._awaiting = holding
        try:
            while True:
                found = self.confirmations.wait_for_room(lambda: self.link.is_current(conn), until,
                                                         time.monotonic)
                if isinstance(found, int):  # a ping must cover results up to this number first
                    self._ask_confirmation(conn, found)
                    continue
                if found == DEAD:
                    self._log.warning("the hub confirmed none of the last %d results for %.0f s: the path is dead; "
                                      "reconnecting", self.confirmations.capacity, self._confirm_deadline)
                    conn.abort()
                return found == ROOM
        finally:
            self._awaiting = 0

    def _put_aside(self, results: list[Result]) -> None:
        """Results that cannot go out now: into the outbox (its oldest dropped when full), seen by :meth:`tick`."""
        for result in results:
            self._dropped(self.outbox.put(result))
        self._wake()

    def _keep(self, results: list[Result]) -> None:
        """Put results in the outbox; if the connection is ready, the outbox is sent now (no result
        waits there for the next one to come along)."""
        self._put_aside(results)
        if self.link.ready:
            self.send_outbox()

    def send_outbox(self) -> int:
        """Send what the outbox holds, oldest first, while the connection takes it; return how many went."""
        with self._flush_lock:
            items = self.outbox.take_all()
            done = 0
            for chunk in _writes(items):
                written = self._write_results(self.link.conn, chunk)
                done += written
                if written < len(chunk):
                    self._dropped(self.outbox.put_back(items[done:]))
                    break
            return done

    def settle(self, timeout: float) -> None:
        """The stop's last sending, before the close frame: wait up to ``timeout`` for the thread
        sending now (it sends what queued up behind it), then what is left in the queue and the
        outbox, while the connection takes it.

        A connection that is open but not ready yet (its handshake under way: the hub's
        ``connected`` not answered, or ``node_ready`` written and not yet marked) is waited for
        too, within the same ``timeout``, when results wait: else they would miss it by moments
        and stay unsent, as the close frame follows.
        """
        deadline = time.monotonic() + timeout
        conn = self.link.conn
        if self.waiting() and not self.link.ready and conn is not None and conn.opened_at is not None \
                and conn.closing_since is None:
            self.link.wait_ready(timeout)
        if not self._queue.settle(max(0.0, deadline - time.monotonic())):
            self._log.warning("a thread was still sending results after %.1f s; closing without waiting for it",
                              timeout)
            return
        self.send_outbox()

    def busy(self) -> bool:
        """Whether :meth:`tick` has work soon: results wait for confirmation, or in the outbox while ready."""
        return bool(len(self.confirmations) or (self.link.ready and len(self.outbox)))

    def tick(self) -> None:
        """The send thread's periodic look (while :meth:`busy`): send what waits in the outbox while the connection is
        ready, and ask the hub to confirm what was sent since the last ping."""
        link = self.link
        if link.ready and len(self.outbox) and not self._flush_lock.locked():
            self.send_outbox()
        conn = link.conn
        ping = self.confirmations.claim(time.monotonic()) if link.is_current(conn) else None
        if ping is not None and conn is not None:
            self._ask_confirmation(conn, ping)

    def _write_results(self, conn: Optional[Connection], results: list[Result]) -> int:
        """Write as many of ``results`` as the connection takes now, record them as unconfirmed,
        and ask for confirmation; return how many were written (the rest is the caller's)."""
        ping = None
        with self._results_lock:
            room = self.confirmations.room()
            if conn is None or room <= 0 or not self.link.is_current(conn):
                return 0
            batch = results[:room]
            written = len(batch) if self._write(conn, [result.frame for result in batch]) else 0
            if not written and conn.closing_since is not None:
                self.link.set_ready(False)  # our close has begun: nothing more goes out on this connection
                self.confirmations.wake()
            if written:
                ping = self.confirmations.add(results[:written], time.monotonic())
        if written:
            self._wake()  # the timers look at what waits for confirmation from now on
        if ping is not None:
            self._ask_confirmation(conn, ping)
        return written

    def _ask_confirmation(self, conn: Connection, number: int) -> None:
        try:
            conn.ping(ACK_PREFIX + str(number).encode())
        except Exception as exc:  # like any failed send: the session is over
            self._log.info("ping failed (%s: %s); dropping the connection", type(exc).__name__, exc)
            conn.abort()

    def pong(self, conn: Connection, payload: bytes) -> None:
        """A pong arrived (connection thread): confirm every result up to the number it carries.

        What follows from it (the next confirmation ping, results that waited for room) is
        written on the send thread: the connection thread never waits for a write.
        """
        if not payload.startswith(ACK_PREFIX):
            return  # a keep-alive pong
        try:
            number = int(payload[len(ACK_PREFIX):])
        except ValueError:
            return
        if conn is not self.link.conn:
            return  # an older connection's (its end reset the confirmations)
        confirmed, again = self.confirmations.confirm(number, time.monotonic())
        self._store.remove_results(confirmed)
        if again is not None:
            self._post(lambda: self._ask_confirmation(conn, again))
        if confirmed and self.link.ready and len(self.outbox):
            self._post(self.send_outbox)  # results that waited for room

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
