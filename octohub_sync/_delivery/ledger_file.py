"""The ledger's file: its tables, how it is opened, what counts as corrupt, and files moved aside.

:mod:`~octohub_sync._delivery.ledger` keeps the node's results in this file (its writer thread, its lock); this
module knows the file itself. Only real damage moves a ledger aside: SQLite's ``SQLITE_CORRUPT`` or
``SQLITE_NOTADB``, a failed ``quick_check``, or a file that is not a ledger of this version. A full disk,
a lock held by another program or a file that cannot be opened says nothing about the results inside:
such a file stays where it is, and the start fails with
:class:`~octohub_sync.exceptions.LedgerUnavailable`. A ledger moved aside
although it was readable (earlier versions moved it aside on any SQLite error, a full disk included) is
found at the next open and its results are taken over.
"""
from __future__ import annotations

import glob
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Callable, Optional

from .._config.state_dir import open_private, refuse_links

__all__ = ["Unusable", "connect", "is_corrupt", "move_aside", "take_over_aside"]

#: Marks the file as ours (PRAGMA application_id): "OCHB".
APPLICATION_ID = 0x4F434842
#: Bumped when the tables change; a file of another version is moved aside.
SCHEMA_VERSION = 1
#: The WAL file is truncated back to this after each checkpoint (bytes).
WAL_LIMIT = 4 * 2**20
#: What a file moved aside is called: ``<ledger>.corrupt-<%Y%m%dT%H%M%S>`` (its -wal and -shm beside it).
ASIDE = ".corrupt-"

# One B-tree each, no index: a transaction touches as few pages as possible. "started" holds only the
# tasks running now (a few hundred rows at most), "finished" is read whole at start and trimmed by age.
_SCHEMA = (
    "CREATE TABLE results (seq INTEGER PRIMARY KEY, task_id TEXT NOT NULL, frame TEXT NOT NULL)",
    "CREATE TABLE finished (task_id TEXT NOT NULL, frame TEXT NOT NULL)",
    "CREATE TABLE started (task_id TEXT NOT NULL)",
)
#: SQLite's primary result codes of a damaged file (sqlite.org/rescode.html): SQLITE_CORRUPT, SQLITE_NOTADB.
_DAMAGE_CODES = (11, 26)
#: Their messages, for Pythons before 3.11, whose exceptions carry no code.
_DAMAGE_TEXTS = ("database disk image is malformed", "file is not a database", "file is encrypted or is not a database")


class Unusable(Exception):
    """The file is damaged, or an SQLite database that is not a ledger of this version."""


def is_corrupt(exc: BaseException) -> bool:
    """Whether ``exc``, raised opening or reading a ledger, says the file itself is damaged."""
    if isinstance(exc, Unusable):
        return True
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in _DAMAGE_CODES  # extended codes keep the primary one in their low byte
    return isinstance(exc, sqlite3.DatabaseError) and any(text in str(exc) for text in _DAMAGE_TEXTS)


def connect(path: Path) -> sqlite3.Connection:
    """Open (or create, mode 0600) the ledger at ``path``, never through a symbolic link.

    Raises:
        Unusable: damaged, or not a ledger of this version.
        sqlite3.Error, OSError: anything else (see :func:`is_corrupt`).
        ConfigError: the file or its -wal or -shm is a symbolic link.
    """
    os.close(open_private(path, os.O_RDWR | os.O_CREAT))  # results may hold secrets
    refuse_links(Path(f"{path}-wal"), Path(f"{path}-shm"))  # SQLite opens these itself
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        _prepare(db)
    except BaseException:
        db.close()
        raise
    db.isolation_level = "DEFERRED"  # "with db:" transactions from here on (what "" means: a plain BEGIN)
    return db


def _prepare(db: sqlite3.Connection) -> None:
    one: Callable[[str], Any] = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    _check(db)
    if one("SELECT count(*) FROM sqlite_master") == 0:
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for statement in _SCHEMA:
            db.execute(statement)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")


def _check(db: sqlite3.Connection) -> None:
    """Raise :class:`Unusable` unless ``db`` is intact and empty or a ledger of this version."""
    one: Callable[[str], Any] = lambda sql: db.execute(sql).fetchone()[0]  # noqa: E731
    if one("PRAGMA quick_check") != "ok":
        raise Unusable("integrity check failed")
    if one("SELECT count(*) FROM sqlite_master") and (
            one("PRAGMA application_id") != APPLICATION_ID or one("PRAGMA user_version") != SCHEMA_VERSION):
        raise Unusable("not an octohub_sync ledger of this version")


def move_aside(path: Path, stamp: str) -> Path:
    """Rename the ledger at ``path`` (with its -wal and -shm) to ``<path>.corrupt-<stamp>``; return that name."""
    aside = path.with_name(f"{path.name}{ASIDE}{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            part.rename(f"{aside}{suffix}")
    return aside


def take_over_aside(db: sqlite3.Connection, path: Path) -> list[tuple[Path, int]]:
    """Copy into ``db`` what each readable ledger moved aside from ``path`` holds, then delete that file.

    A damaged file moved aside stays for a post-mortem. Returns (file, its unsent results) per file taken over.
    """
    taken = []
    for aside in sorted(path.parent.glob(glob.escape(path.name) + ASIDE + "*")):
        if aside.name.endswith(("-wal", "-shm")) or aside.is_symlink():
            continue
        rows = _read_aside(aside)
        if rows is None:
            continue
        results, finished, started = rows
        with db:  # one transaction: all of it, or (an error: the file stays) none
            db.executemany("INSERT INTO results (task_id, frame) VALUES (?, ?)", results)
            db.executemany("INSERT INTO finished (task_id, frame) VALUES (?, ?)", finished)
            db.executemany("INSERT INTO started (task_id) VALUES (?)", started)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{aside}{suffix}").unlink(missing_ok=True)
        taken.append((aside, len(results)))
    return taken


def _read_aside(aside: Path) -> Optional[tuple[list, list, list]]:
    """The rows of a ledger moved aside, None when it is damaged or no ledger (left as it is)."""
    try:
        # Read-write: its -wal (renamed along with it) is read and checkpointed, as any open does.
        with closing(sqlite3.connect(str(aside), isolation_level=None)) as old:
            _check(old)
            if not old.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                return [], [], []
            return (old.execute("SELECT task_id, frame FROM results ORDER BY seq").fetchall(),
                    old.execute("SELECT task_id, frame FROM finished ORDER BY rowid").fetchall(),
                    old.execute("SELECT task_id FROM started ORDER BY rowid").fetchall())
    except (sqlite3.Error, Unusable):
        return None
