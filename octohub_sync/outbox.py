"""Results that could not be sent yet, kept until the next ``node_ready``."""
from __future__ import annotations

import threading
from collections import deque
from typing import Optional

__all__ = ["Outbox"]


class Outbox:
    """A bounded FIFO of ``(task_id, frame)``; when full, the oldest result is given up."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[tuple[str, str]] = deque()
        self._lock = threading.Lock()

    def put(self, task_id: str, frame: str) -> Optional[str]:
        """Keep a result; return the task_id of the result given up to make room, if any."""
        with self._lock:
            dropped = None
            if len(self._items) >= self.capacity:
                dropped = self._items.popleft()[0]
            self._items.append((task_id, frame))
            return dropped

    def put_back(self, items: list[tuple[str, str]]) -> list[str]:
        """Return unsent results to the front, keeping their order; return the task_ids given up."""
        with self._lock:
            self._items.extendleft(reversed(items))
            return [self._items.popleft()[0] for _ in range(len(self._items) - self.capacity)]

    def take_all(self) -> list[tuple[str, str]]:
        """Remove and return everything, oldest first."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def __len__(self) -> int:
        return len(self._items)
