"""What a store of results and task outcomes offers, and the store that keeps nothing.

:class:`MemoryStore` is an embedded node's default (``OCTOHUB_STATE_DIR`` unset or ``off``) and the
interface every store offers; :class:`~octohub_sync._delivery.ledger.Ledger` keeps the same on disk. This module
imports nothing beyond the standard library's basics, so that the runner and the delivery, which only
talk to a store, import on every platform and without SQLite.
"""
from __future__ import annotations

import itertools
from typing import Callable, Iterable, NamedTuple

from .outbox import Result

__all__ = ["MemoryStore", "Snapshot", "Then"]

#: Receives results once they are stored, oldest first (ResultDelivery sends them).
Then = Callable[[list[Result]], None]


class Snapshot(NamedTuple):
    """What a store held when it was opened."""

    #: Results not confirmed by the hub, oldest first: (seq, task_id, frame).
    pending: list[tuple[int, str, str]]
    #: Finished tasks, oldest first: (task_id, result frame).
    finished: list[tuple[str, str]]
    #: Tasks that started and never finished: the process ended while they ran.
    started: list[str]
    #: The last process that held this store ended without closing it (killed, crashed, power lost):
    #: it may have left a connection open at the hub.
    unclean: bool = False


class MemoryStore:
    """Keeps nothing: every guarantee ends with the process (OCTOHUB_STATE_DIR unset or off)."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)

    def open(self) -> Snapshot:
        return Snapshot([], [], [])

    def close(self) -> None:
        pass

    def add_result(self, task_id: str, frame: str, then: Then, *, finished: bool = False) -> None:
        """Record a result, then hand it to ``then`` to be sent (``finished``: it ends the task).

        Here ``then([result])`` is called at once; a :class:`~octohub_sync._delivery.ledger.Ledger` calls it
        on its writer thread once the result is on disk, with every result of that commit.
        """
        then([Result(next(self._seq), task_id, frame)])

    def settle(self) -> None:
        """Wait until every result added so far was handed to its ``then``."""

    def remove_results(self, seqs: Iterable[int]) -> None:
        """The hub confirmed these results (or they were dropped)."""

    def started(self, task_id: str, *, wait: bool = False) -> None:
        """A task's handler is about to run; ``wait`` until that is on disk."""
