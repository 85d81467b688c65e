"""What must outlive the process: results the hub has not confirmed, finished tasks, started tasks.

:class:`Ledger` keeps them in an SQLite file, one per pc_id, in WAL mode with ``synchronous=NORMAL``:
a commit survives the process being killed (it is in the operating system's hands), a power cut may
lose the last commits before a checkpoint but never corrupts the file. (A node without a state
directory uses :class:`~octohub_sync.store.MemoryStore`, which keeps nothing.)

Writes go through one thread that commits whatever has queued up as one transaction
(group commit). A result must be on disk before the node tries to send it, so the writer
thread, not the worker that produced it, hands each result on to be sent once its commit
is done: no worker ever waits for the disk, and under load one commit carries the results
of every worker that finished meanwhile.

One process at a time uses a ledger: :meth:`Ledger.open` takes an operating-system lock on
``<pc_id>.lock`` beside it with :mod:`filelock` (``flock`` on POSIX, ``LockFileEx`` or
``msvcrt.locking`` on Windows, by its version), which the system releases when the process ends,
however it ends.

Why one module: the schema, the writer thread that commits in groups and the statements it runs are
one file format; split, a change of the schema would touch several files that must agree.
"""
from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import platformdirs.macos
import platformdirs.unix
import platformdirs.windows
from platformdirs.api import PlatformDirsABC

from .exceptions import ConfigError
from .outbox import Result
from .stats import Stats
from .store import MemoryStore, Snapshot, Then

if TYPE_CHECKING:
    from filelock import BaseFileLock

__all__ = ["Ledger", "MemoryStore", "Snapshot", "default_state_dir"]

#: The folder of the program's state under each platform's own place for it.
APP_NAME = "octohub-node"
# sys.platform -> how platformdirs answers there; any other platform is answered as Unix (XDG).
_PLATFORM_DIRS: dict[str, type[PlatformDirsABC]] = {
    "win32": platformdirs.windows.Windows,
    "darwin": platformdirs.macos.MacOS,
}
#: Marks the file as ours (PRAGMA application_id): "OCHB".
APPLICATION_ID = 0x4F434842
#: Bumped when the tables change; a file of another version is moved aside.
SCHEMA_VERSION = 1
#: The WAL file is truncated back to this after each checkpoint (bytes).
WAL_LIMIT = 4 * 2**20
#: A write failure is logged at ERROR at most once per this many seconds (counted every time).
ERROR_LOG_INTERVAL = 300.0

# One B-tree each, no index: a transaction touches as few pages as possible. "started" holds only the
# tasks running now (a few hundred rows at most), "finished" is read whole at start and trimmed by age.
_SCHEMA = (
    "CREATE TABLE results (seq INTEGER PRIMARY KEY, task_id TEXT NOT NULL, frame TEXT NOT NULL)",
    "CREATE TABLE finished (task_id TEXT NOT NULL, frame TEXT NOT NULL)",
    "CREATE TABLE started (task_id TEXT NOT NULL)",
)

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


def default_state_dir(*, platform: Optional[str] = None) -> Path:
    """Where the program keeps its ledger unless told otherwise (``OCTOHUB_STATE_DIR``).

    ``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``, its first entry) where systemd runs, else
    each platform's own place for an application's state, as :mod:`platformdirs` knows it:
    ``%LOCALAPPDATA%\\octohub-node`` on Windows, ``~/Library/Application Support/octohub-node``
    on macOS, ``$XDG_STATE_HOME/octohub-node`` (``~/.local/state/octohub-node``) elsewhere.

    Args:
        platform: the ``sys.platform`` to answer for (by default the one this process runs on).
    """
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux") and os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(os.pathsep)[0])
    dirs = _PLATFORM_DIRS.get(platform, platformdirs.unix.Unix)
    # appauthor=False: no vendor folder above ours on Windows; roaming=False: the ledger belongs to
    # this PC (%LOCALAPPDATA%), never to a profile that roams to other machines (%APPDATA%).
    return Path(dirs(APP_NAME, appauthor=False, roaming=False).user_state_dir)


class Ledger(MemoryStore):
    """The SQLite ledger of one pc_id in ``state_dir``; :meth:`open` locks it for this process.

    Args:
        cache_size: finished tasks kept (OCTOHUB_RESULT_CACHE_SIZE); older ones are forgotten.
    """

    def __init__(self, state_dir: str, pc_id: str, *, cache_size: int, stats: Stats,
                 log: logging.LoggerAdapter) -> None:
        super().__init__()
        self.directory = Path(state_dir).expanduser()
        self.path = self.directory / f"{pc_id}.sqlite3"
        #: Exists while a process holds the ledger open: found at open, the last one never closed it.
        self._open_marker = self.directory / f"{pc_id}.open"
        self._pc_id = pc_id
        self._cache_size = cache_size
        self._stats = stats
        self._log = log
        self._file_lock: Optional[BaseFileLock] = None
        self._db: Optional[sqlite3.Connection] = None
        self._cond = threading.Condition()
        self._batch = _Batch()     # the writes not yet taken by the writer thread
        self._added = 0            # finished rows added since the table was last trimmed
        self._error_logged: Optional[float] = None  # when a write failure was last logged (monotonic)
        self._closing = True       # not open: results are handed on at once, in memory only
        self._thread: Optional[threading.Thread] = None

    # -- open and close ------------------------------------------------------------------------

    def open(self) -> Snapshot:
        """Lock the file for this process, read what it holds, start the writer.

        Raises:
            ConfigError: the directory cannot be used, or another process holds the ledger.
        """
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("OCTOHUB_STATE_DIR", str(self.directory),
                              f"cannot create the state directory: {exc.strerror or exc}") from None
        self._file_lock = self._lock()
        try:
            self._db, snapshot = self._load()
            snapshot = snapshot._replace(unclean=self._open_marker.exists())
            self._open_marker.touch(mode=0o600)  # as private as the ledger (the umask may only narrow it)
        except BaseException:
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
        lock = FileLock(str(self.path.with_suffix(".lock")), timeout=0, mode=0o600, thread_local=False)
        try:
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
        try:
            new = not self.path.exists()
            db = _connect(self.path)
            if new:  # said once: where results will wait (a plain run picks the place itself)
                self._log.info("created the ledger %s (OCTOHUB_STATE_DIR: where; off: keep nothing)", self.path)
            return db, self._read(db)
        except (sqlite3.DatabaseError, _Foreign) as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                part = Path(f"{self.path}{suffix}")
                if part.exists():
                    part.rename(f"{aside}{suffix}")
            self._log.error("the ledger %s cannot be used (%s); moved it aside to %s and starting with an "
                            "empty one: results and finished tasks it held are not recovered", self.path, exc, aside)
            db = _connect(self.path)
            return db, self._read(db)

    def _read(self, db: sqlite3.Connection) -> Snapshot:
        pending = db.execute("SELECT seq, task_id, frame FROM results ORDER BY seq").fetchall()
        finished = db.execute("SELECT task_id, frame FROM finished ORDER BY rowid DESC LIMIT ?",
                              (self._cache_size,)).fetchall()
        started = list(dict.fromkeys(row[0] for row in db.execute(
            "SELECT task_id FROM started ORDER BY rowid DESC LIMIT ?", (self._cache_size,))))
        if pending or started:
            self._log.info("ledger %s: %d result(s) to send, %d task(s) interrupted by the last stop",
                           self.path, len(pending), len(started))
        return Snapshot(pending, finished[::-1], started[::-1])

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
        except sqlite3.Error as exc:
            # Disk full, I/O error: the node goes on with these results in memory only. Once logged,
            # a failure that goes on (every batch fails) is only counted, for ERROR_LOG_INTERVAL.
            self._stats.incr("ledger_errors")
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


class _Foreign(Exception):
    """The file is an SQLite database, but not a ledger of this version."""


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # results may hold secrets
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        _prepare(db)
    except BaseException:
        db.close()
        raise
    db.isolation_level = ""  # "with db:" transactions from here on
    return db


def _prepare(db: sqlite3.Connection) -> None:
    one: Callable[[str], Any] = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    if one("PRAGMA quick_check") != "ok":
        raise sqlite3.DatabaseError("integrity check failed")
    tables = one("SELECT count(*) FROM sqlite_master")
    if tables == 0:
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for statement in _SCHEMA:
            db.execute(statement)
    elif one("PRAGMA application_id") != APPLICATION_ID or one("PRAGMA user_version") != SCHEMA_VERSION:
        raise _Foreign("not an octohub_sync ledger of this version")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
