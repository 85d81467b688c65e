"""The thread that writes to the hub for the node's liveness loops, so that they never wait for a socket.

The timers and watchdog loops prove the node alive (_ops/liveness.py): a loop that has not ticked
for ``MAX_TICK_AGE`` seconds makes ``/livez`` fail and stops systemd's watchdog pings. A write
into a stalled path blocks for up to ``OCTOHUB_CONNECT_TIMEOUT``, so what those loops would
write (confirmation pings, due progress, a result answered by a time limit) is posted here
instead. This thread may block for as long as the socket makes it; nothing depends on its ticks.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

__all__ = ["Sender"]

#: A job; what it returns is ignored (delivery posts send_outbox, which says how many results went).
Job = Callable[[], object]


class Sender:
    """Runs posted jobs, oldest first, on the thread ``octohub-send``.

    A job already waiting is not queued again (jobs compare as callables do: the same bound
    method is the same job), so a loop that posts the same job every tick while this thread is
    stuck queues it once. Before :meth:`start` and after :meth:`stop`, :meth:`post` runs the
    job at once on the caller's thread: only the node's stop and unit tests do that.
    """

    def __init__(self, *, log: logging.LoggerAdapter) -> None:
        self._log = log
        self._cond = threading.Condition()
        self._jobs: dict[Job, None] = {}  # an ordered set
        self._thread: Optional[threading.Thread] = None
        self._stopping = False

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            # Daemon: a write stuck in a stalled socket must never keep the process alive at exit;
            # stop() joins it.
            self._thread = threading.Thread(target=self._run, name="octohub-send", daemon=True)
            self._thread.start()

    def post(self, job: Job) -> None:
        """Run ``job`` soon on the send thread (at once, here, when it is not running)."""
        with self._cond:
            running = self._thread is not None and not self._stopping
            if running:
                if job not in self._jobs:
                    self._jobs[job] = None
                    self._cond.notify()
                return
        self._call(job)

    def stop(self, timeout: float) -> None:
        """Run what was posted, then end the thread (waiting at most ``timeout`` seconds)."""
        with self._cond:
            thread = self._thread
            self._stopping = True
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._cond:
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if not self._jobs:
                    return
                job = next(iter(self._jobs))
                del self._jobs[job]
            self._call(job)

    def _call(self, job: Job) -> None:
        try:
            job()
        except Exception:  # a bug of ours must not end the thread that writes for the loops
            self._log.exception("a write for the node's timers failed; carrying on")
