"""Admits tasks and runs them on a thread pool: backpressure, redelivery, limits, answers, drain on stop.

Why one module: admission (dedupe, backpressure, limits, restart), a task's start and end, its
answers (refused, cancelled, timed out) and the drain change the task registry and the limits' lanes
under one lock (task_run.py holds the state; this module is every critical section on it): split,
one lock would be taken in several files, or one task's change in several critical sections.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Mapping, Optional

from .._delivery.store import MemoryStore
from .._ops.stats import Stats
from .._wire import protocol
from .._wire.protocol import Task
from .answers import LOGGED_ERROR_CHARS, Answers
from .builtin_tasks import BUILTIN_HANDLERS, TaskHandler
from .limits import Limits
from .middleware import Chains, Middleware
from .options import NO_KEY, TaskKeyError, TaskOptions
from .pool import Workers
from .retry import RetryWaits
from .task_control import activate, deactivate
from .task_run import TaskRegistry, TaskRun

__all__ = ["TaskRunner"]

logger = logging.getLogger(__name__)

#: Called with (task_id, frame, finished=..., hand_off=...) for every result; must never block for long.
#: ``finished``: the result ends its task (a refusal or a repeat does not); ``hand_off``: the caller
#: is a liveness loop, another thread must write it (ResultDelivery.deliver).
Deliver = Callable[..., None]

#: Runs one handler as a task: (run, handler, task message) -> result (``TaskBoard.call``).
CallHandler = Callable[[TaskRun, TaskHandler, Mapping[str, Any]], Any]


class TaskRunner:
    """Accepts tasks from the connection thread and runs their handlers on a pool.

    At most ``max_workers`` handlers run and ``max_pending`` wait; more is refused
    at once with a ``failed`` "node busy" result. A ``task_id`` seen again while it
    runs is ignored; seen again after it finished, its stored result is sent again.
    ``store`` records which tasks started and how they finished, so that a ledger
    can answer a redelivery after a restart too (see _delivery/ledger.py). Every accepted task is a
    run in ``tasks`` (task_run.py) until it ends.
    """

    def __init__(self, *, deliver: Deliver, stats: Stats, max_workers: int, max_pending: int, task_timeout: float,
                 cache_size: int, max_result_bytes: int = 0, store: MemoryStore, log: logging.LoggerAdapter,
                 call: Optional[CallHandler] = None, max_tasks: int = 0,
                 on_max_tasks: Callable[[], None] = lambda: None, tasks: Optional[TaskRegistry] = None,
                 log_errors: str = "text", on_thread_exit: Callable[[], None] = lambda: None) -> None:
        self.handlers: dict[str, TaskHandler] = dict(BUILTIN_HANDLERS)
        #: What a task of each type calls: its handler inside the middleware (middleware.py), composed once.
        self._chains = Chains(self.handlers)
        # Task types whose handler must not run again after a restart interrupted it.
        self._no_retry: set[str] = set()
        self._store = store
        self._interrupted: set[str] = set()  # ids a restart interrupted, not seen again yet
        self._deliver = deliver
        self._stats = stats
        self._log = log
        self._capacity = max_workers + max_pending
        self._default_timeout = task_timeout or None
        self._cache_size = cache_size
        self._answers = Answers(max_result_bytes=max_result_bytes, log_errors=log_errors, log=log)
        self._failed = self._answers.failed
        self._max_workers = max_workers
        #: The runs of the tasks accepted and not finished; its lock guards them, the lanes and the cache.
        self.tasks = TaskRegistry() if tasks is None else tasks
        self._lock = self.tasks.lock
        self._runs = self.tasks.runs
        self._done: OrderedDict[str, str] = OrderedDict()
        self._accepting = True
        self._turned_away: set[str] = set()  # tasks answered without running since the node stopped accepting
        self._pool: Optional[Workers] = None
        self._call_handler: CallHandler = call or (lambda run, handler, message: handler(message))
        #: Lanes of the types registered with concurrency= or rate= (limits.py); they share our lock.
        self.limits = Limits(lock=self._lock, launch=self._launch)
        #: The tasks between two attempts (``retries=``): no worker, no limit slot (retry.py).
        self.retries = RetryWaits(lock=self._lock, launch=self._again)
        self._limited: dict[str, TaskOptions] = {}  # read without the lock on every task: types with limits
        # OCTOHUB_MAX_TASKS: tasks this run may still accept (0: no limit); then on_max_tasks (_node/recycle.py).
        self._max_tasks = self._tasks_left = max_tasks
        self._on_max_tasks = on_max_tasks
        self._on_thread_exit = on_thread_exit  # each worker thread's last act: its resources' teardowns

    def register(self, task_type: str, handler: TaskHandler, options: TaskOptions) -> Optional[TaskHandler]:
        """Run ``handler`` for tasks of ``task_type`` from now on, with ``register_task_handler``'s options.

        Returns:
            The handler it replaces, if any (an isolated one's children are the caller's to stop).
        """
        call = self._chains.wrap(handler)  # before any change: a child may refuse a middleware
        with self._lock:
            replaced = self.handlers.get(task_type)
            self.handlers[task_type] = handler
            self._chains.calls[task_type] = call
            (self._no_retry.discard if options.retry_interrupted else self._no_retry.add)(task_type)
            self.limits.options[task_type] = options
            # Swapped whole: submit() reads it without the lock.
            limited = {name: opts for name, opts in self._limited.items() if name != task_type}
            self._limited = {**limited, task_type: options} if options.limited else limited
        return replaced

    def add_middleware(self, fn: Middleware) -> None:
        """Run ``fn(task, call_next)`` around every handler, inside those added before (``Chains.add``);
        RuntimeError once the node started (an isolated type's children hold their chain)."""
        with self._lock:
            if self._pool is not None:
                raise RuntimeError("add_middleware() must be called before the node starts")
            self._chains.add(fn, self.handlers)

    def restore(self, finished: list[tuple[str, str]], started: list[str]) -> None:
        """What a ledger held at start: finished tasks (oldest first) and tasks a restart interrupted."""
        with self._lock:
            for tid, frame in finished:
                self._remember(tid, frame)
            self._interrupted.update(started)

    def start(self) -> None:
        """Create the pool (threads start lazily, on the first tasks)."""
        with self._lock:
            self._accepting = True
            self._turned_away.clear()
            self._tasks_left = self._max_tasks
            self.limits.reopen()
            if self._pool is None:
                self._pool = Workers(self._run, self._max_workers, log=self._log, on_exit=self._on_thread_exit)

    # -- called on the connection thread -------------------------------------------------

    def submit(self, task: Task) -> None:
        """Accept, refuse or de-duplicate one task. Never blocks."""
        self._stats.incr("tasks_received")
        tid = task.task_id
        options = self._limited.get(task.task_type)  # the whole cost of limits for a type without any
        lane_key = key_error = None
        if options is not None:
            try:
                lane_key = options.key_of(task.task_type, task.message)
            except TaskKeyError as exc:
                key_error = f"TaskKeyError: {exc}"
        with self._lock:
            if tid in self._runs:
                self._stats.incr("tasks_duplicate")
                self._log.debug("task %s arrived again while running; ignored", tid)
                return
            stored = self._done.get(tid)
            interrupted = self._after_restart(task) if stored is None and self._interrupted else None
            refusal = None if stored is not None or interrupted is not None else (self._refusal_reason(task) or key_error)
            if stored is None and interrupted is None and refusal is None:
                # Time limits count from here, while a task waits for a worker or a limit too.
                timeout = task.timeout or self._default_timeout
                deadline = time.monotonic() + timeout if timeout else None
                if self._tasks_left:
                    self._count_down()
                pool = self._pool
                assert pool is not None  # _refusal_reason() refuses every task while there is none
                if options is None:
                    self._runs[tid] = TaskRun(task, deadline)
                    pool.put(tid)
                    return
                job = self._runs[tid] = TaskRun(task, deadline, self.limits.lane(task.task_type, lane_key))
                if lane_key is not NO_KEY:
                    job.control.task_key = lane_key  # the log records' task_key (log_context.py)
                if self.limits.admit(job.lane, job):
                    pool.put(tid)
                return
        # Never while holding the lock, and on the send thread (hand_off): the connection thread,
        # which calls this, must go on reading while a write waits.
        if stored is not None:
            self._stats.incr("tasks_duplicate")
            self._log.debug("task %s arrived again after it finished; sending its result again", tid)
            self._deliver(tid, stored, hand_off=True)
        elif interrupted is not None:
            self._stats.incr("tasks_rejected")
            self._deliver(tid, interrupted, finished=True, hand_off=True)
        elif refusal is not None:
            self._answer_refused(tid, refusal)

    def _after_restart(self, task: Task) -> Optional[str]:
        """A task that was running when the process ended: run it again, or answer TaskInterrupted."""
        tid = task.task_id
        if tid not in self._interrupted:
            return None
        self._interrupted.discard(tid)
        if task.task_type not in self._no_retry:
            self._log.info("task %s was running when the node stopped last time; running it again "
                           "(at-least-once)", tid)
            return None
        self._log.warning("task %s was running when the node stopped last time; its handler is registered "
                          "with retry_interrupted=False, so it is answered TaskInterrupted", tid)
        frame = self._failed(tid, "TaskInterrupted: the node stopped while this task ran; "
                                          "not run again (retry_interrupted=False)")
        self._remember(tid, frame)
        return frame

    def _count_down(self) -> None:
        """One task accepted against OCTOHUB_MAX_TASKS; the last one closes the door (lock held)."""
        self._tasks_left -= 1
        if not self._tasks_left:
            self._accepting = False  # refused from now on as by a stopping node
            self._on_max_tasks()

    def _launch(self, job: TaskRun) -> bool:
        """A job a limit held back may run now (lock held); False once the pool is gone (expire() withdrew
        a job whose time limit passed while it waited: it never gets here)."""
        if self._pool is None:
            self._runs.pop(job.task.task_id, None)
            return False
        self._pool.put(job.task.task_id)
        return True

    def refuse_unread(self, task_id: str, error: str) -> None:
        """Answer ``failed`` for a task that cannot even be read (e.g. too large). Never blocks."""
        self._stats.incr("tasks_received")
        self._answer_refused(task_id, error)

    def _answer_refused(self, task_id: str, error: str) -> None:
        """(The connection thread.) Answer ``failed`` without running it, written by the send thread."""
        if not self._accepting:
            self._turned_away.add(task_id)
        self._stats.incr("tasks_rejected")
        self._log.info("refused task %s: %s", task_id, protocol.cut_text(error, LOGGED_ERROR_CHARS))
        self._deliver(task_id, self._failed(task_id, error), hand_off=True)

    def _refusal_reason(self, task: Task) -> Optional[str]:
        if not self._accepting or self._pool is None:
            return "NodeShuttingDown: node shutting down"
        if task.task_type not in self.handlers:
            return f"UnknownTaskType: no handler for task_type {task.task_type!r}"
        if len(self._runs) >= self._capacity:
            return f"NodeBusy: node busy ({len(self._runs)} tasks running or queued)"
        return None

    # -- called on a pool thread ---------------------------------------------------------

    def _run(self, tid: str) -> None:
        with self._lock:  # one lock round-trip starts the job, one ends it
            job = self._runs.get(tid)
            if job is None:  # answered by shutdown() or cancel() while this work item was being picked up
                return
            job.started = True
            self.tasks.running += 1
            if job.lane is not None:
                self.limits.begun(job.lane)
        task_type = job.task.task_type
        # The task's own lines (its failure, a late result) carry its fields too (log_context.py).
        token = activate(job.control)
        try:
            self._finish(job, task_type)
        finally:
            deactivate(token)

    def _finish(self, job: TaskRun, task_type: str) -> None:
        tid = job.task_id
        if job.attempt == 1:  # later attempts: the ledger holds it as started still
            # Only a handler that must not run twice waits for the disk before it starts.
            self._store.started(tid, wait=task_type in self._no_retry)
        frame, ok, delay = self._call(job)
        with self._lock:
            self.tasks.running -= 1
            if job.lane is not None:
                self.limits.finished(job.lane)
            retried = delay is not None and self._wait_retry(job, delay)
            if not retried:
                del self._runs[tid]
                late = job.timed_out
                if not late:
                    self._remember(tid, frame)
                self.tasks.ended()
        if retried:
            return
        if late:
            self._log.warning("task %s finished after its time limit; its late result is discarded", tid)
            return
        self._stats.incr("tasks_completed" if ok else "tasks_failed")
        # The result may still be on its way after drain() saw the job end: shutdown() waits for it.
        self._deliver(tid, frame, finished=True)

    def _call(self, job: TaskRun) -> tuple[str, bool, Optional[float]]:
        """(frame, ok, delay): ``delay`` is not None when the handler's exception gets another attempt."""
        task = job.task
        retry = getattr(self.limits.options.get(task.task_type), "retry", None)  # None: a built-in type
        attempts = None if retry is None else job.attempt
        try:
            handler = self._chains.calls[task.task_type]  # admitted for a registered type; never removed
            result = self._call_handler(job, handler, task.message)
        except BaseException as exc:  # anything, SystemExit from a sys.exit() included: the hub gets "failed"
            if retry is not None and retry.retries_on(exc, job.attempt) and not job.control.cancel_reason:
                delay = retry.delay(job.attempt)
                return self._answers.retrying(task.task_id, task.task_type, exc, job.attempt, delay), False, delay
            return self._answers.error(task.task_id, task.task_type, exc, attempts), False, None
        frame, ok = self._answers.result(task.task_id, task.task_type, result, attempts)
        return frame, ok, None

    def _wait_retry(self, job: TaskRun, delay: float) -> bool:
        """Hold ``job`` for its next attempt, holding no worker and no limit slot (lock held); False if it
        cannot have one any more (answered TaskTimeout, cancelled, the node stopping): then it is answered."""
        if job.timed_out or job.control.cancel_reason is not None or not self._accepting or self._pool is None:
            return False
        job.next_attempt()
        self.retries.wait(job, delay)
        return True

    def _again(self, job: TaskRun) -> None:
        """(The retries thread, lock held.) Its next attempt is due: back through its limits, as a new task."""
        if self._runs.get(job.task_id) is not job or not job.waiting_retry or self._pool is None:
            return  # answered while it waited (its time limit, a cancel, the stop)
        job.waiting_retry = False
        if job.lane is None or self.limits.admit(job.lane, job):
            self._pool.put(job.task_id)

    def _remember(self, tid: str, frame: str) -> None:
        self._done[tid] = frame
        if len(self._done) > self._cache_size:
            self._done.popitem(last=False)

    # -- called on the watchdog thread ---------------------------------------------------

    def expire(self, now: float) -> None:
        """Answer ``failed`` for every task past its time limit (its thread runs on)."""
        expired = []
        with self._lock:
            for job in self.tasks.past_deadline(now):
                tid = job.task_id
                limit = job.task.timeout or self._default_timeout or 0.0
                frame = self._failed(tid, f"TaskTimeout: timed out after {limit:g} s",
                                     job.attempt if getattr(self.limits.options.get(job.task.task_type), "retry", None) else None)
                self._remember(tid, frame)
                # The hub has its answer; a cooperative handler now stops instead of running on.
                job.control.request_cancel(f"timed out after {limit:g} s", answered=True)
                expired.append((tid, frame))
                # One still waiting for its limit gives its place back now, not at its turn.
                if job.waiting_retry:
                    self.retries.remove(job)
                    del self._runs[tid]
                elif job.lane is not None and not job.started and self.limits.withdraw(job.lane, job):
                    del self._runs[tid]
            if expired:
                self.tasks.ended()  # an answered task is one drain() no longer waits for
        for tid, frame in expired:
            self._stats.incr("tasks_timed_out")
            self._log.warning("task %s timed out", tid)
            # This runs on the timers thread, which proves the node alive: it must not write to a socket.
            self._deliver(tid, frame, finished=True, hand_off=True)

    # -- stop ----------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """From now on every new task is answered ``failed`` "node shutting down".

        No lock: one attribute store, so that it may be called from anywhere, holding the runner's
        lock too (the recycling's door, _node/recycle.py); a task that got the lock first was accepted before.
        """
        self._accepting = False

    def drain(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` for running and queued tasks; return the ids still running (the registry's).
        A task waiting for its next attempt is answered NodeShuttingDown at once: a stop waits out no backoff."""
        with self._lock:
            self.retries.clear()
            waiting = [job for job in self._runs.values() if job.waiting_retry]
            answers = [(job.task_id, self._failed(job.task_id, "NodeShuttingDown: node stopped before attempt "
                                                  f"{job.attempt}", job.attempt - 1)) for job in waiting]
            for tid, frame in answers:
                del self._runs[tid]
                self._remember(tid, frame)
        for tid, frame in answers:
            self._stats.incr("tasks_failed")
            self._deliver(tid, frame, finished=True)
        return self.tasks.drain(timeout)

    def turned_away(self, task_ids: list[str]) -> list[str]:
        """Those of ``task_ids`` answered without running since the node stopped accepting tasks
        (``NodeShuttingDown``): their answers carry no work, and losing one loses no result."""
        return [tid for tid in task_ids if tid in self._turned_away]

    def shutdown(self) -> None:
        """Release the pool; queued tasks that never started are answered ``failed``.

        When no handler runs any more, it also waits for the workers to hand over the results
        they finished last; a handler still running (past the drain) is not waited for.
        """
        with self._lock:
            pool, self._pool = self._pool, None
            self.limits.clear()  # the jobs that waited for a limit are among those never started
            never_started = [tid for tid, job in self._runs.items() if not job.started]
            for tid in never_started:
                del self._runs[tid]
            idle = not self._runs
        self.limits.close()
        self.retries.close()
        if pool is not None:
            pool.shutdown(wait=idle)
        self._turned_away.update(never_started)
        for tid in never_started:
            self._stats.incr("tasks_rejected")
            self._deliver(tid, self._failed(tid, "NodeShuttingDown: node stopped before the task started"))

    def waiting(self) -> list[tuple[str, Any, list[str]]]:
        """(task type, key or None, task ids in order) of every lane holding tasks back."""
        with self._lock:
            return [(task_type, key, [job.task.task_id for job in jobs]) for task_type, key, jobs in self.limits.waiting()]

    # -- called on the connection thread: the hub's task_cancel -----------------------------

    def cancel(self, task_id: str, reason: Optional[str]) -> None:
        """The hub's ``task_cancel`` (docs/protocol.md §6). Never blocks.

        A task waiting for a worker never starts and is answered ``failed`` ``TaskCancelled`` at
        once; a running one gets its cancel flag set, and its answer is whatever its handler
        then does. Unknown, finished or already answered task ids are ignored.
        """
        why = f"cancelled by the hub: {reason}" if reason else "cancelled by the hub"
        answer = None
        with self._lock:
            job = self._runs.get(task_id)
            if job is None or job.timed_out:
                job = None
            elif not job.started:
                del self._runs[task_id]
                when = "before it started" if job.attempt == 1 else f"before attempt {job.attempt}"
                if job.waiting_retry:  # between two attempts: it holds nothing (retry.py)
                    self.retries.remove(job)
                elif job.lane is not None and not self.limits.withdraw(job.lane, job):
                    self.limits.finished(job.lane, begun=False)  # it was on its way to a worker: free its place
                answer = self._failed(task_id, f"TaskCancelled: {why} ({when})",
                                      None if job.attempt == 1 else job.attempt - 1)
                self._remember(task_id, answer)
                self.tasks.ended()
            elif not job.control.request_cancel(why):
                job = None  # asked before, or its handler has just returned: its result is on its way
        if job is None:
            self._log.debug("task_cancel for task %s ignored: not running or waiting here, finished, or cancelled already",
                            task_id)
            return
        self._stats.incr("tasks_cancelled")
        if answer is None:
            self._log.info("task %s %s while running; its handler decides when it stops", task_id, why)
            return
        self._log.info("task %s %s before it started", task_id, why)
        self._deliver(task_id, answer, finished=True, hand_off=True)
