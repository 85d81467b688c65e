"""One thread sends results at a time and takes every result that queued up meanwhile (flat combining).

Under load the other workers go back to their tasks instead of queueing up on the socket's
lock, and with one task at a time a result is still sent by the thread that produced it,
without a hand-off. A result never waits here for another result to come along: whoever
queues results while nobody sends becomes the sender (or hands the sending to the send
thread, for a liveness loop), and the sender leaves only once the queue is empty.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Optional

from .outbox import Result

__all__ = ["SendQueue"]


class SendQueue:
    """Results waiting for the thread that sends now.

    Args:
        send: sends (or keeps) one write's worth of results; may raise (a bug of ours).
        chunks: cuts the results taken at once into writes.
        keep: takes the results a raising ``send`` left, so that nothing stays here unseen.
        post: runs a job on the send thread (``Sender.post``).
    """

    def __init__(self, *, send: Callable[[list[Result]], None], chunks: Callable[[list[Result]], list[list[Result]]],
                 keep: Callable[[list[Result]], None], post: Callable[[Callable[[], object]], object]) -> None:
        self._send, self._chunks, self._keep, self._post = send, chunks, keep, post
        self._queue: deque[Result] = deque()
        self._sending = False  # a thread is sending
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when the sender leaves, if someone waits
        self._settling = 0  # settle() calls waiting on _idle

    def __len__(self) -> int:
        """Results queued behind the thread sending now."""
        return len(self._queue)

    def task_ids(self) -> list[str]:
        """The tasks of the results queued here."""
        with self._lock:
            return [result.task_id for result in self._queue]

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the thread sending now, then send what is still queued (what a
        raising send left) on this thread; False if the thread sending now was still at it when
        ``timeout`` passed.

        The stop's last sending: a thread (a worker, the frame reader) may still be sending when
        the node is about to close, with results queued behind it.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            self._settling += 1
            try:
                while self._sending:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._idle.wait(left)
                if not self._queue:
                    return True
                self._sending = True
            finally:
                self._settling -= 1
        self._drain()
        return True

    def put(self, results: list[Result]) -> None:
        """Send ``results`` on this thread, or leave them to the thread sending now."""
        batch = self._enqueue(results)
        if batch is not None:
            self._drain(batch)

    def put_later(self, results: list[Result]) -> None:
        """As :meth:`put`, but the send thread sends them if nobody is sending now."""
        batch = self._enqueue(results)
        if batch is not None:
            self._post(lambda: self._drain(batch))

    def _enqueue(self, results: list[Result]) -> Optional[list[Result]]:
        """Queue results; if nobody sends now, the caller sends: then the results to send first
        (those a raising send left queued, then these), taken under the same lock."""
        with self._lock:
            if self._sending:
                self._queue.extend(results)
                return None
            self._sending = True
            if not self._queue:
                return results
            batch = list(self._queue) + results
            self._queue.clear()
            return batch

    def _drain(self, batch: Optional[list[Result]] = None) -> None:
        """Send ``batch``, then what the queue holds until it is empty (only the thread that set
        ``_sending``)."""
        queue = self._queue
        while True:
            if batch is None:
                with self._lock:
                    if not queue:
                        self._leave()
                        return
                    batch = list(queue)
                    queue.clear()
            done = 0
            try:
                for chunk in self._chunks(batch):
                    self._send(chunk)
                    done += len(chunk)
            finally:
                if done < len(batch):  # something raised: the rest goes where the periodic look sees it
                    self._keep(batch[done:])
                    with self._lock:
                        self._leave()
            batch = None

    def _leave(self) -> None:
        """The sending thread leaves (lock held)."""
        self._sending = False
        if self._settling:
            self._idle.notify_all()
