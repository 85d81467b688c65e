"""What must outlive the process: results the hub has not confirmed, finished tasks, started tasks.

:class:`Ledger` keeps them in an SQLite file, one per pc_id, in WAL mode with ``synchronous=NORMAL``:
a commit survives the process being killed (it is in the operating system's hands), a power cut may
lose the last commits before a checkpoint but never corrupts the file. (A node without a state
directory uses :class:`~octohub_sync._delivery.store.MemoryStore`, which keeps nothing.)

Writes go through one thread that commits whatever has queued up as one transaction
(group commit). A result must be on disk before the node tries to send it, so the writer
thread, not the worker that produced it, hands each result on to be sent once its commit
is done: no worker ever waits for the disk, and under load one commit carries the results
of every worker that finished meanwhile.

One process at a time uses a ledger: :meth:`Ledger.open` takes an operating-system lock on
``<pc_id>.lock`` beside it with :mod:`filelock` (``flock`` on POSIX, ``LockFileEx`` or
``msvcrt.locking`` on Windows, by its version), which the system releases when the process ends,
however it ends.

The file itself (its tables, how it is opened, what counts as damage, files moved aside) is
ledger_file.py's; the state directory and its files' safety are _config/state_dir.py's.

Why one module: the writer thread that commits in groups, the statements it runs and the snapshot it
reads at open are one use of the file; split, one transaction's rules would be in several places.
"""
from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

from .._config.state_dir import default_state_dir, open_private, private_directory, refuse_links
from .._ops.stats import Stats
from .._wire import protocol
from ..exceptions import ConfigError, LedgerUnavailable
from .ledger_file import Unusable, connect, is_corrupt, move_aside, take_over_aside
from .outbox import Result
from .store import MemoryStore, Snapshot, Then

if TYPE_CHECKING:
    from filelock import BaseFileLock

__all__ = ["Ledger", "LedgerUnavailable", "MemoryStore", "Snapshot", "default_state_dir"]

#: A write failure is logged at ERROR at most once per this many seconds (counted every time).
ERROR_LOG_INTERVAL = 300.0

# The writes, in the order a transaction applies them (a task's rows are added before they are removed).
# Each is one statement for many rows (see _apply): every step of a statement releases the GIL, and
# each release lets another thread in for as long as it likes, so the writer takes as few as it can.
_STARTED, _FINISHED_START, _FINISHED, _RESULT, _CONFIRMED = range(5)
_STATEMENTS = (
    ("INSERT INTO started (task_id) VALUES ", "(?)"),
    ("DELETE FROM started WHERE task_id IN ", "?"),
    ("INSERT INTO finished (task_id, frame) VALUES ", "(?,?)"),
    ("INSERT INTO results (seq, task_id, frame) VALUES ", "(?,?,?)"),
    ("DELETE FROM results WHERE seq IN ", "?"),
)
#: Rows per statement: a batch is cut into pieces of these sizes, so that few statement texts
#: exist (the connection caches their compiled form) and no statement passes 999 parameters.
_CHUNKS = (256, 32, 4, 1)
#: The finished table is trimmed back to OCTOHUB_RESULT_CACHE_SIZE rows once this many were added.
TRIM_EVERY = 64
#: Longest a write nobody waits for (a task started, a result confirmed) waits for company (seconds).
ASYNC_DELAY = 0.2


class Ledger(MemoryStore):
    """The SQLite ledger of one pc_id in ``state_dir``; :meth:`open` locks it for this process.

    Args:
        cache_size: finished tasks kept (OCTOHUB_RESULT_CACHE_SIZE); older ones are forgotten.
        max_result_bytes: OCTOHUB_MAX_RESULT_BYTES: a stored result larger than today's limits (kept by
            an older version) is cut at open (protocol.fit_result), never sent as it is.
    """

    def __init__(self, state_dir: str, pc_id: str, *, cache_size: int, stats: Stats,
                 log: logging.LoggerAdapter, max_result_bytes: int = 0) -> None:
        super().__init__()
        self.directory = Path(state_dir).expanduser()
        self.path = self.directory / f"{pc_id}.sqlite3"
        #: Exists while a process holds the ledger open: found at open, the last one never closed it.
        self._open_marker = self.directory / f"{pc_id}.open"
        self._pc_id = pc_id
        self._cache_size = cache_size
        self._max_result_bytes = max_result_bytes
        self._stats = stats
        self._log = log
        self._file_lock: Optional[BaseFileLock] = None
        self._db: Optional[sqlite3.Connection] = None
        self._cond = threading.Condition()
        self._batch = _Batch()     # the writes not yet taken by the writer thread
        self._added = 0            # finished rows added since the table was last trimmed
        self._error_logged: Optional[float] = None  # when a write failure was last logged (monotonic)
        self._unwritten = 0        # results kept in memory only since writing began to fail
        self._closing = True       # not open: results are handed on at once, in memory only
        self._thread: Optional[threading.Thread] = None

    # -- open and close ------------------------------------------------------------------------

    def open(self) -> Snapshot:
        """Lock the file for this process, read what it holds, start the writer.

        Raises:
            ConfigError: the directory cannot be used (or others may write in it), a file in it is a
                symbolic link, or another process holds the ledger.
            LedgerUnavailable: the file cannot be opened now (a full disk, an I/O error); it is left as it is.
        """
        private_directory(self.directory)
        self._file_lock = self._lock()
        try:
            self._db, snapshot = self._load()
            snapshot = snapshot._replace(unclean=self._open_marker.exists())
            try:
                os.close(open_private(self._open_marker, os.O_WRONLY | os.O_CREAT))
            except OSError:
                pass  # an empty file needs no space, only an inode; without it the next start re-registers once more
        except BaseException:
            if self._db is not None:  # a marker refused after the file was opened
                self._db.close()
                self._db = None
            self._unlock()
            raise
        self._seq = itertools.count(max((seq for seq, _, _ in snapshot.pending), default=0) + 1)
        self._closing = False
        # Daemon: never holds the process open; close() drains the queue and joins it.
        self._thread = threading.Thread(target=self._write_loop, name="octohub-ledger", daemon=True)
        self._thread.start()
        return snapshot

    def close(self) -> None:
        """Write what is queued, close the file, release the lock."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(10)
        if self._db is not None:
            self._db.close()
            self._db = None
            try:
                self._open_marker.unlink()
            except OSError:
                pass  # the next start then re-registers once more than it needs to: harmless
        self._unlock()

    def _lock(self) -> BaseFileLock:
        # filelock, not fcntl: the same OS lock on Windows (LockFileEx / msvcrt.locking) as on POSIX
        # (flock), released by the system when the process dies, and its Windows half is tested on
        # Windows by its maintainers, which this project cannot do. Imported here: only a ledger needs it.
        from filelock import FileLock, Timeout

        # timeout=0: refuse at once; thread_local=False: stop() may run on another thread than start().
        path = self.path.with_suffix(".lock")
        lock = FileLock(str(path), timeout=0, mode=0o600, thread_local=False)
        try:
            refuse_links(path)  # the directory is private (open()): nobody can plant one after this check
            lock.acquire()
        except Timeout:
            raise ConfigError("OCTOHUB_STATE_DIR", str(self.directory),
                              f"another node process with pc_id {self._pc_id} is using {self.path}; "
                              "give each node on this host its own OCTOHUB_INSTANCE (or OCTOHUB_PC_ID)") from None
        except OSError as exc:
            raise ConfigError("OCTOHUB_STATE_DIR", str(self.directory),
                              f"cannot write there: {exc.strerror or exc}") from None
        return lock

    def _unlock(self) -> None:
        if self._file_lock is not None:
            self._file_lock.release()
            self._file_lock = None

    def _load(self) -> tuple[sqlite3.Connection, Snapshot]:
        new = not self.path.exists()
        try:
            try:
                db = connect(self.path)
                snapshot = self._read(db)
            except (sqlite3.Error, Unusable) as exc:
                if not is_corrupt(exc):
                    raise
                aside = move_aside(self.path, time.strftime("%Y%m%dT%H%M%S"))
                self._log.error("the ledger %s cannot be used: it is damaged (%s); moved it aside to %s and starting with an "
                                "empty one: results and finished tasks it held are not recovered", self.path, exc, aside)
                db, new = connect(self.path), True
            if new:  # said once: where results will wait (a plain run picks the place itself)
                self._log.info("created the ledger %s (OCTOHUB_STATE_DIR: where; off: keep nothing)", self.path)
            taken = take_over_aside(db, self.path)
            for aside, count in taken:
                self._log.warning("%s, moved aside by an earlier start although it was readable, is taken over: "
                                  "its %d unsent result(s) go out with this start's; removed it", aside, count)
            return db, self._read(db) if taken or new else snapshot
        except (sqlite3.Error, OSError, Unusable) as exc:
            # A full disk, an I/O error, a lock held by another program: nothing says the file is damaged.
            raise LedgerUnavailable(
                f"the ledger {self.path} cannot be opened now ({exc}); it was left as it is, with the results it "
                f"holds: free space or fix access in OCTOHUB_STATE_DIR='{self.directory}' and start again") from None

    def _read(self, db: sqlite3.Connection) -> Snapshot:
        pending = db.execute("SELECT seq, task_id, frame FROM results ORDER BY seq").fetchall()
        finished = db.execute("SELECT task_id, frame FROM finished ORDER BY rowid DESC LIMIT ?",
                              (self._cache_size,)).fetchall()
        started = list(dict.fromkeys(row[0] for row in db.execute(
            "SELECT task_id FROM started ORDER BY rowid DESC LIMIT ?", (self._cache_size,))))
        if pending or started:
            self._log.info("ledger %s: %d result(s) to send, %d task(s) interrupted by the last stop",
                           self.path, len(pending), len(started))
        return Snapshot(self._fit(pending), self._fit(finished[::-1]), started[::-1])

    def _fit(self, rows: list) -> list:
        """``rows`` (their frame last) with every frame over today's limits cut, or dropped if unreadable."""
        fitted = []
        for row in rows:
            frame = protocol.fit_result(row[-1], self._max_result_bytes)
            if frame is not row[-1]:  # kept by an older version: sent whole, it would block every connection
                self._log.warning("ledger %s: the stored result of task %s (%d bytes) exceeds today's limits; %s",
                                  self.path, str(row[-2])[:protocol.MAX_TASK_ID], protocol.frame_size(row[-1]),
                                  "dropped it (unreadable)" if frame is None else "sending it cut")
            if frame is not None:
                fitted.append(row if frame is row[-1] else (*row[:-1], frame))
        return fitted

    # -- writes --------------------------------------------------------------------------------

    def add_result(self, task_id: str, frame: str, then: Then, *, finished: bool = False) -> None:
        """Queue a result for the next commit; the writer thread hands it to ``then`` after it.

        Never waits for the disk: the caller (a worker) goes back to the pool at once, and results
        that finish while a commit runs share the next one.
        """
        with self._cond:
            result = Result(next(self._seq), task_id, frame)
            closed = self._closing  # closed (a handler that outlived stop()): nothing will be written
            if not closed:
                batch = self._batch
                if finished:
                    if task_id in batch.started:
                        # Begun and ended in one transaction is neither: its row never reaches the disk.
                        del batch.started[task_id]
                    else:
                        batch.add(_FINISHED_START, (task_id,))
                    batch.add(_FINISHED, (task_id, frame))
                batch.add(_RESULT, result)
                batch.then.append((then, result))
                self._urgent(batch)
        if closed:
            then([result])

    def settle(self) -> None:
        with self._cond:
            batch = self._batch
            self._urgent(batch)
        self._await(batch)

    def remove_results(self, seqs: Iterable[int]) -> None:
        rows = [(seq,) for seq in seqs]
        if rows:
            self._queue(_CONFIRMED, rows)

    def started(self, task_id: str, *, wait: bool = False) -> None:
        with self._cond:
            batch = self._begin()
            batch.started[task_id] = None
            if wait:
                self._urgent(batch)
        if wait:
            self._await(batch)

    def _queue(self, kind: int, rows: list[tuple]) -> None:
        with self._cond:
            self._begin().rows[kind].extend(rows)

    def _begin(self) -> _Batch:
        """The batch a write nobody waits for joins (lock held)."""
        batch = self._batch
        if batch.empty:
            self._cond.notify()  # the writer starts the ASYNC_DELAY clock
            batch.empty = False
        return batch

    def _urgent(self, batch: _Batch) -> None:
        """Someone waits for ``batch`` (called with the lock held): write it now."""
        if not batch.urgent:
            batch.urgent = True
            self._cond.notify()

    def _await(self, batch: _Batch) -> None:
        while not batch.written.wait(1.0):
            if self._thread is None or not self._thread.is_alive():
                return  # closed: nothing will be written any more (a handler that outlived stop())

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                self._gather()
                batch, self._batch = self._batch, _Batch()
                closing = self._closing
            if not batch.empty:
                self._write(batch)
            # Written, or failed and counted (then the results live in memory only): send them,
            # all those of one receiver in one call.
            handed: list[tuple[Then, list[Result]]] = []
            for then, result in batch.then:
                if handed and handed[-1][0] == then:
                    handed[-1][1].append(result)
                else:
                    handed.append((then, [result]))
            for then, results in handed:
                try:
                    then(results)
                except Exception:  # the writer must outlive any failure of what it calls
                    self._log.exception("handing on %d result(s) failed", len(results))
            batch.written.set()
            if closing and batch.empty:
                return

    def _gather(self) -> None:
        """Wait (lock held) until a batch should be written: someone waits for it, or ASYNC_DELAY passed.

        Writes nobody waits for (a task started, a result confirmed) ride along with the next
        result, so that they cost no transaction of their own.
        """
        due: Optional[float] = None
        while not (self._closing or self._batch.urgent):
            if self._batch.empty:
                due = None
                self._cond.wait()
                continue
            now = time.monotonic()
            due = due or now + ASYNC_DELAY
            if now >= due:
                return
            self._cond.wait(due - now)

    def _write(self, batch: _Batch) -> None:
        db = self._db
        assert db is not None
        try:
            batch.rows[_STARTED].extend((task_id,) for task_id in batch.started)
            with db:  # one transaction: committed on success, rolled back on error
                for kind, rows in enumerate(batch.rows):
                    if rows:
                        _apply(db, kind, rows)
                self._added += len(batch.rows[_FINISHED])
                if self._added >= TRIM_EVERY:
                    db.execute("DELETE FROM finished WHERE rowid <= (SELECT max(rowid) FROM finished) - ?",
                               (self._cache_size,))
                    self._added = 0
            if self._unwritten:
                self._log.warning("writing the ledger %s works again; %d result(s) produced while it failed are "
                                  "kept in memory only until the hub confirms them", self.path, self._unwritten)
                self._unwritten = 0
        except sqlite3.Error as exc:
            # Disk full, I/O error: the node goes on with these results in memory only. Once logged,
            # a failure that goes on (every batch fails) is only counted, for ERROR_LOG_INTERVAL.
            self._stats.incr("ledger_errors")
            self._unwritten += len(batch.then)
            now = time.monotonic()
            level = logging.DEBUG
            if self._error_logged is None or now - self._error_logged >= ERROR_LOG_INTERVAL:
                self._error_logged, level = now, logging.ERROR
            self._log.log(level, "writing the ledger %s failed (%s): results are kept in memory only until it "
                                 "works again (stats: ledger_errors); a restart now could lose them", self.path, exc)


def _apply(db: sqlite3.Connection, kind: int, rows: list[tuple]) -> None:
    """Apply one kind of write to all ``rows``, in a few statements of many rows each."""
    head, one = _STATEMENTS[kind]
    insert = head.startswith("INSERT")
    i = 0
    for size in _CHUNKS:
        if len(rows) - i < size:
            continue
        sql = head + (",".join([one] * size) if insert else "(" + ",".join([one] * size) + ")")
        while len(rows) - i >= size:
            db.execute(sql, [value for row in rows[i:i + size] for value in row])
            i += size


class _Batch:
    """The writes of one transaction, by kind; the results to hand on after it; set once done."""

    __slots__ = ("rows", "started", "then", "empty", "urgent", "written")

    def __init__(self) -> None:
        self.rows: tuple[list[tuple], ...] = tuple([] for _ in _STATEMENTS)
        #: The tasks started since the last transaction, by id: one that finishes before it is written
        #: leaves no row (see add_result). Written as the rows of _STARTED.
        self.started: dict[str, None] = {}
        self.then: list[tuple[Then, Result]] = []
        self.empty = True
        self.urgent = False  # someone waits for it
        self.written = threading.Event()

    def add(self, kind: int, row: tuple) -> None:
        self.rows[kind].append(row)
        self.empty = False
