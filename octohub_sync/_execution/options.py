"""What ``register_task_handler`` (and ``Handlers.task``) was told about a task type, validated once.

The keywords are read by two owners: the runner's lanes (``concurrency``, ``key``, ``rate``:
limits.py) and the child processes (``isolation`` and its per-child limits: _isolation/pool.py).
Validating them here, before either sees them, makes a bad value fail at registration (or at
import, for ``@handlers.task``) with the task type and the value in the message.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, fields
from types import FrameType
from typing import Any, Callable, Hashable, Mapping, Optional, Sequence, Union

from .resources import check_uses
from .retry import RetryPolicy

__all__ = ["Key", "NO_KEY", "Rate", "TaskKeyError", "TaskOptions"]

#: A task's key: a field name of ``task["data"]``, or a function of the whole task message.
Key = Union[str, Callable[[Mapping[str, Any]], Hashable]]

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
NO_KEY = object()  # the one lane of a type registered without key=


class TaskKeyError(Exception):
    """A task's key could not be read; the task is answered ``failed`` without running."""


@dataclass(frozen=True)
class Rate:
    """At most ``count`` task starts within any ``period`` seconds."""

    count: int
    period: float
    text: str

    @classmethod
    def parse(cls, task_type: str, value: Any) -> "Rate":
        """``"N/s"``, ``"N/m"`` or ``"N/h"``, N a whole number >= 1.

        Raises:
            ValueError: naming the task type and the value.
        """
        match = _RATE.match(value) if isinstance(value, str) else None
        if match is None or int(match.group(1)) < 1:
            raise ValueError(f"task type {task_type!r}: rate={value!r} is not a rate: expected \"N/s\", \"N/m\" or "
                             "\"N/h\" with N a whole number >= 1 (for one start every 2 s, write \"30/m\")")
        return cls(int(match.group(1)), _PERIODS[match.group(2)], f"{int(match.group(1))}/{match.group(2)}")


@dataclass(frozen=True)
class TaskOptions:
    """What ``register_task_handler`` was told about a task type, validated once (see :meth:`build`)."""

    retry_interrupted: bool = True
    concurrency: Optional[int] = None
    key: Optional[Key] = None
    rate: Optional[Rate] = None
    isolation: Optional[str] = None
    max_tasks_per_child: Optional[int] = None
    max_memory_per_child: Optional[float] = None
    #: ``retries=`` and the rest (retry.py); None: a failure is the answer (the default: posting is not idempotent).
    retry: Optional[RetryPolicy] = None
    uses: tuple[str, ...] = ()  # the resources its handler gets as keyword arguments (resources.py)

    @classmethod
    def build(cls, task_type: str, **options: Any) -> "TaskOptions":
        """Validate the keywords of ``register_task_handler``.

        An error's message ends with the file and line of the user's call (the first frame outside
        this package): the traceback's last lines are this module's, the mistake is in theirs.

        Raises:
            ValueError: ``concurrency`` below 1, a bad ``rate``, an unknown ``isolation``, a per-child
                limit that is not a positive number or is given without ``isolation="process"``,
                ``key`` without ``concurrency`` or ``rate``.
            TypeError: ``concurrency`` not an int, ``key`` neither a str nor a callable, ``uses`` not a
                list of names, no such keyword.
        """
        try:
            return cls._build(task_type, **options)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc} ({_callers_line()})") from None

    @classmethod
    def _build(cls, task_type: str, *, retry_interrupted: bool = True, concurrency: Optional[int] = None,
               key: Optional[Key] = None, rate: Optional[str] = None, isolation: Optional[str] = None,
               max_tasks_per_child: Optional[int] = None, max_memory_per_child: Optional[float] = None,
               uses: Optional[Sequence[str]] = None, retries: Optional[int] = None, retry_on: Any = None,
               retry_backoff: Optional[float] = None, retry_backoff_max: Optional[float] = None,
               **unknown: Any) -> "TaskOptions":
        if unknown:
            from .._config.suggest import did_you_mean  # only on this error: the task path never gets here
            name = sorted(unknown)[0]
            known = [f.name for f in fields(cls) if f.name != "retry"] + list(_RETRY_KEYWORDS)
            raise TypeError(f"task type {task_type!r}: register_task_handler has no keyword {name!r}"
                            f"{did_you_mean(name, known)}")
        if isolation not in (None, "process"):
            raise ValueError(f"task type {task_type!r}: isolation must be 'process' or None, not {isolation!r}")
        per_child = {"max_tasks_per_child": max_tasks_per_child, "max_memory_per_child": max_memory_per_child}
        for name, value in per_child.items():
            if value is None:
                continue
            if isolation is None:
                raise ValueError(f"task type {task_type!r}: {name} needs isolation='process'")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"task type {task_type!r}: {name} must be a positive number, not {value!r}")
        if concurrency is not None:
            if isinstance(concurrency, bool) or not isinstance(concurrency, int):
                raise TypeError(f"task type {task_type!r}: concurrency={concurrency!r} is not a whole number")
            if concurrency < 1:
                raise ValueError(f"task type {task_type!r}: concurrency={concurrency!r} must be >= 1")
        if key is not None and not (isinstance(key, str) and key) and not callable(key):
            raise TypeError(f"task type {task_type!r}: key={key!r} is neither a field name of task['data'] "
                            "nor a callable task -> hashable")
        if key is not None and concurrency is None and rate is None:  # it would do nothing
            raise ValueError(f"task type {task_type!r}: key= holds concurrency= or rate= per key value; "
                             "give one of them with it")
        retry = _retry_policy(task_type, retries, retry_on, retry_backoff, retry_backoff_max)
        return cls(retry_interrupted=retry_interrupted, concurrency=concurrency, key=key,
                   rate=None if rate is None else Rate.parse(task_type, rate), isolation=isolation,
                   max_tasks_per_child=max_tasks_per_child, max_memory_per_child=max_memory_per_child,
                   uses=check_uses(task_type, uses), retry=retry)

    @property
    def limited(self) -> bool:
        """True if tasks of this type may have to wait for a limit."""
        return self.concurrency is not None or self.rate is not None

    def key_of(self, task_type: str, message: Mapping[str, Any]) -> Hashable:
        """The task's lane key.

        Raises:
            TaskKeyError: the field is missing, ``data`` is not an object, the callable raised,
                or the value is not hashable.
        """
        if self.key is None:
            return NO_KEY
        if isinstance(self.key, str):
            data = message.get("data")
            if not isinstance(data, dict) or self.key not in data:
                raise TaskKeyError(f"task type {task_type!r} needs data[{self.key!r}]")
            value = data[self.key]
        else:
            try:
                value = self.key(message)
            except Exception as exc:
                raise TaskKeyError(f"task type {task_type!r}: its key function raised "
                                   f"{type(exc).__name__}: {exc}") from None
        try:
            hash(value)
        except TypeError:
            raise TaskKeyError(f"task type {task_type!r}: key value {value!r} is not hashable") from None
        return value

_RETRY_KEYWORDS = ("retries", "retry_on", "retry_backoff", "retry_backoff_max")


def _retry_policy(task_type: str, retries: Any, retry_on: Any, backoff: Any, backoff_max: Any) -> Optional[RetryPolicy]:
    """The retry keywords as a :class:`RetryPolicy`; None without ``retries`` (or ``retries=0``)."""
    if retries is None or retries == 0:
        given = [name for name, value in zip(_RETRY_KEYWORDS[1:], (retry_on, backoff, backoff_max)) if value is not None]
        if given and retries is None:
            raise ValueError(f"task type {task_type!r}: {given[0]}= needs retries=N (retries are off by default)")
        return None
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"task type {task_type!r}: retries={retries!r} must be a whole number >= 0")
    kinds = retry_on if isinstance(retry_on, tuple) else (Exception,) if retry_on is None else (retry_on,)
    if not kinds or not all(isinstance(kind, type) and issubclass(kind, Exception) for kind in kinds):
        raise TypeError(f"task type {task_type!r}: retry_on={retry_on!r} must be an exception class or a tuple "
                        "of them (subclasses of Exception)")
    numbers = {"retry_backoff": 1.0 if backoff is None else backoff,
               "retry_backoff_max": 60.0 if backoff_max is None else backoff_max}
    for name, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
            raise ValueError(f"task type {task_type!r}: {name}={value!r} must be a number of seconds >= 0")
    return RetryPolicy(retries, kinds, float(numbers["retry_backoff"]), float(numbers["retry_backoff_max"]))


def _callers_line() -> str:
    """``file.py, line 12``: where the user's code called into the package (for an error message)."""
    from .._ops.log_safety import PACKAGE_DIR  # only on an error
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return "called from inside octohub_sync"
    return f"{frame.f_code.co_filename}, line {frame.f_lineno}"
