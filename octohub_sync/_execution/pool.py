"""The task pool: a ``concurrent.futures.ThreadPoolExecutor`` whose threads take task ids from one queue.

``ThreadPoolExecutor.submit`` costs a ``Future`` (and its ``Condition``), a work item and a
Python-level semaphore per call, on the thread that calls it: the connection thread, which reads
every frame and is the node's busiest. :class:`Workers` pays that once per worker thread instead:
each thread of the executor runs one *loop* that takes task ids from a ``queue.SimpleQueue``
(written in C), until the pool shuts down.

Loops start on demand, as the executor's threads do, and are counted as it counts its idle
threads: a loop leaves a token each time it comes back for a task (not for the task that started
it), and a task takes a token if there is one, else starts a loop, up to ``max_workers``. The
tokens live in a second SimpleQueue: no Python lock is taken per task. Until ``max_workers``
loops run, the loops waiting or about to take a task are then exactly the tokens plus the tasks
queued, so a task never waits behind a running one while fewer than ``max_workers`` run.

A loop waits without a timeout, so an idle node wakes no thread. That a thread waiting so never
holds the interpreter's exit (a script that never called ``stop()``), every live pool is told to
stop its loops at the point where the executor is told to end its threads: the hook the standard
library's own pool uses (``threading._register_atexit``, in CPython since 3.9). Where a Python
has no such hook, :class:`Workers` submits every task to the executor directly, as before.
"""
from __future__ import annotations

import logging
import queue
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

__all__ = ["Workers"]

_STOP = None  # what a loop takes to end
_live: "weakref.WeakSet[Workers]" = weakref.WeakSet()  # pools whose loops the interpreter's exit ends


def _at_exit() -> None:
    for workers in list(_live):
        workers._stop_loops()


_register_atexit = getattr(threading, "_register_atexit", None)
if _register_atexit is not None:
    # Registered after concurrent.futures' own hook (imported above), so run before it: the loops
    # end, then the executor joins its threads.
    _register_atexit(_at_exit)


class Workers:
    """Run ``run(task_id)`` for every task id :meth:`put` here, on at most ``max_workers`` threads.

    Args:
        run: what a worker does with a task id; an exception it raises is logged (a bug of ours:
            the runner answers every handler's failure itself).
        on_exit: what a worker thread does last, on that thread, when the pool stops: tear down
            its resources (_execution/resources.py). Not run where the pool has no loops.
    """

    def __init__(self, run: Callable[[str], None], max_workers: int, *, log: logging.LoggerAdapter,
                 loops: bool = _register_atexit is not None, on_exit: Callable[[], None] = lambda: None) -> None:
        self._run = run
        self._on_exit = on_exit
        self._max = max_workers
        self._log = log
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="octohub-task")
        self._tasks: queue.SimpleQueue[Optional[str]] = queue.SimpleQueue()
        self._idle: queue.SimpleQueue[None] = queue.SimpleQueue()  # a token per loop waiting (or about to)
        self._lock = threading.Lock()  # guards the loop count and closing: taken only to start or stop loops
        self._loops = 0
        self._closed = False
        self._direct = not loops  # no exit hook: every task is its own call on the executor
        if loops:
            _live.add(self)

    def put(self, task_id: str) -> None:
        """Run ``task_id`` as soon as a worker is free (never blocks).

        Raises:
            RuntimeError: the pool is shut down, or the interpreter is exiting.
        """
        if self._direct:
            self._pool.submit(self._call, task_id)
            return
        if self._closed:
            raise RuntimeError("cannot run a task after the pool shut down")
        self._tasks.put(task_id)
        try:
            self._idle.get_nowait()  # a loop waits: it takes this task (and the tokens stay bounded)
        except queue.Empty:
            if self._loops < self._max:
                self._start_loop()

    def _start_loop(self) -> None:
        with self._lock:
            if self._closed or self._loops >= self._max:
                return
            self._loops += 1
        try:
            self._pool.submit(self._loop)
        except BaseException:
            with self._lock:
                self._loops -= 1
            raise

    def shutdown(self, *, wait: bool) -> None:
        """No task starts from now on; with ``wait``, return once every worker thread has ended.

        Task ids still queued are dropped (the runner answers those tasks itself).
        """
        self._stop_loops()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _stop_loops(self) -> None:
        with self._lock:
            self._closed = True
            loops = self._loops
        _live.discard(self)
        while True:  # what no loop took yet is not run
            try:
                self._tasks.get_nowait()
            except queue.Empty:
                break
        for _ in range(loops):
            self._tasks.put(_STOP)

    def _loop(self) -> None:
        take, idle = self._tasks.get, self._idle.put
        task_id = take()  # the task that started this loop (or one as old): no token for it
        while True:
            if task_id is _STOP:
                self._exit()
                return
            self._call(task_id)
            idle(None)
            task_id = take()

    def _exit(self) -> None:
        try:
            self._on_exit()
        except BaseException:  # the thread ends either way; the pool's shutdown must not hang on it
            self._log.exception("ending a worker thread failed")

    def _call(self, task_id: str) -> None:
        try:
            self._run(task_id)
        except BaseException:  # the loop, and its thread's place in the pool, outlive a bug of ours
            self._log.exception("running task %s failed", task_id)
