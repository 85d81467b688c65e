"""Results that could not be sent yet, kept until the next ``node_ready``."""
from __future__ import annotations

import threading
from collections import deque
from typing import NamedTuple

__all__ = ["Outbox", "Result"]


class Result(NamedTuple):
    """A result on its way: its number in the store (see ledger.py), its task and its frame."""

    seq: int
    task_id: str
    frame: str


class Outbox:
    """A bounded FIFO of results; when full, the oldest result is dropped."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Result] = deque()
        self._lock = threading.Lock()

    def put(self, result: Result) -> list[Result]:
        """Keep a result; return the results dropped to make room (the oldest)."""
        with self._lock:
            self._items.append(result)
            return [self._items.popleft() for _ in range(len(self._items) - self.capacity)]

    def put_back(self, items: list[Result]) -> list[Result]:
        """Return unsent results to the front, keeping their order; return the results dropped."""
        with self._lock:
            self._items.extendleft(reversed(items))
            return [self._items.popleft() for _ in range(len(self._items) - self.capacity)]

    def take_all(self) -> list[Result]:
        """Remove and return everything, oldest first."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def task_ids(self) -> list[str]:
        """The tasks of the results kept here, oldest first."""
        with self._lock:
            return [result.task_id for result in self._items]

    def __len__(self) -> int:
        return len(self._items)
