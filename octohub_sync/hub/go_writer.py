"""How the Go server writes to a node, with the hazards a node can trigger (docs/protocol.md §4).

The original server writes every message for a connection from one goroutine (``writePump``)
that takes them from a queue of :data:`QUEUE_SIZE`; a message that finds the queue full is
dropped with a log line, answers included. Its ping handler answers a node's **ping frame**
with a write from the goroutine that reads, and gorilla/websocket panics on a second writer:
the panic is not recovered, so the whole server process ends. The go dialect of the local hub
does the same on purpose, so that a node that would crash the real server crashes this one.

The deterministic rule for "a write may be under way": a frame is being written or waits in
the queue, or the hub received a message from that node or finished a write to it less than
:data:`CRASH_WINDOW` seconds ago (the Go server answers every message a node sends, so its
answer is then on its way).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Union

logger = logging.getLogger(__name__)

__all__ = ["CRASH_WINDOW", "QUEUE_SIZE", "GoWriter"]

#: The Go server's per-connection queue (``connection.buffer_size``).
QUEUE_SIZE = 256
#: Seconds after a message from the node, or a write to it, during which a ping frame from it counts as
#: meeting a write under way.
CRASH_WINDOW = 0.25

Data = Union[str, bytes]


class GoWriter:
    """One connection's queue and writer thread, as the Go server's ``writePump``.

    Args:
        write: writes one message to the node (websockets' ``send``); raises once the connection is gone.
        name: the writer thread's name.
    """

    def __init__(self, write: Callable[[Data], None], *, name: str) -> None:
        self._write = write
        self._queue: queue.Queue[Union[Data, None]] = queue.Queue(QUEUE_SIZE)
        self._writing = False
        self._busy_until = 0.0
        self._closed = False
        #: Messages dropped because the queue was full.
        self.dropped = 0
        # Daemon: a test hub must never keep a process alive; close() ends it.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, message: Data) -> None:
        """Queue a message for the node; drop it if the queue is full, as the Go server does."""
        self._busy_until = time.monotonic() + CRASH_WINDOW
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.dropped += 1
            logger.warning("go dialect: the send queue of a connection is full (%d); dropping a message", QUEUE_SIZE)

    def received(self) -> None:
        """A message from the node arrived: the hub's answer to it is on its way."""
        self._busy_until = time.monotonic() + CRASH_WINDOW

    def meets_write(self) -> bool:
        """Whether a ping frame arriving now would meet a write under way (the module's rule)."""
        return self._writing or not self._queue.empty() or time.monotonic() < self._busy_until

    def close(self) -> None:
        """End the writer thread; what waits in the queue is not written."""
        self._closed = True
        with self._queue.mutex:
            self._queue.queue.clear()
        self._queue.put_nowait(None)

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            if message is None or self._closed:
                return
            self._writing = True
            try:
                self._write(message)
            except Exception as exc:  # the connection is gone: what follows is not written either
                logger.debug("go dialect: write failed: %s", exc)
                return
            finally:
                self._writing = False
                self._busy_until = time.monotonic() + CRASH_WINDOW
