"""Noticing that the process or the machine was away: a pure function of two clock readings.

The watchdog reads the monotonic and the wall clock on every turn of its loop and asks
:func:`detect_pause` whether the time between two turns is more than it asked to sleep.
Two clocks, because the platforms' monotonic clocks differ across a suspend of the machine:

- Linux: ``time.monotonic()`` is ``CLOCK_MONOTONIC``, which stops while the machine is
  suspended (``CLOCK_BOOTTIME`` would count it; PEP 418's table of clocks).
- macOS: ``time.monotonic()`` is ``mach_absolute_time()`` (CPython's ``time`` docs), which
  does not advance during sleep (``mach_continuous_time()`` is the one that does).
- Windows: up to Python 3.12 ``time.monotonic()`` is ``GetTickCount64()``, which includes the
  time spent in sleep or hibernation (Microsoft's "Windows Time" page); from 3.13 it is
  ``QueryPerformanceCounter()`` (gh-88494), whose behaviour across a suspend Microsoft's
  pages do not state.

So a suspend shows either as a late tick (the monotonic clock counted it) or as a wall-clock
jump that the monotonic clock does not share; a stopped process (SIGSTOP, a paused VM, a
debugger) always shows as a late tick. Both count, and nothing here depends on which.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Optional

__all__ = ["MIN_PAUSE", "Pause", "PauseKind", "Tick", "detect_pause", "pause_threshold"]

#: Shortest absence treated as a pause (seconds), whatever the keep-alive interval: a loaded
#: machine can run a thread a second or two late, and an NTP step moves the wall clock by
#: about that much; neither is worth dropping a working connection for.
MIN_PAUSE = 5.0


class PauseKind(str, Enum):
    """How the absence showed."""

    #: The monotonic clock advanced far more than the loop slept: this process did not run.
    PROCESS = "process paused"
    #: The wall clock advanced far more than the monotonic clock: the machine was suspended.
    SUSPEND = "machine suspended"


@dataclass(frozen=True)
class Pause:
    """An absence: its kind and how long it lasted beyond the expected sleep (seconds)."""

    kind: PauseKind
    seconds: float


class Tick(NamedTuple):
    """One reading of both clocks: ``time.monotonic()`` and ``time.time()``."""

    monotonic: float
    wall: float


def pause_threshold(ping_interval: float) -> float:
    """Seconds of absence after which a connection counts as dead: a missed keep-alive at least."""
    return max(ping_interval, MIN_PAUSE)


def detect_pause(previous: Tick, current: Tick, *, expected: float, threshold: float) -> Optional[Pause]:
    """Whether more than ``threshold`` seconds went by unnoticed between two readings.

    Args:
        previous: the clocks when the loop went to sleep (or last looked).
        current: the clocks now.
        expected: how long the loop asked to sleep; waking early is normal, late is not.
        threshold: see :func:`pause_threshold`.

    Returns:
        None, or the :class:`Pause`. A wall clock set back, or moved by less than ``threshold``
        (NTP), is no pause.
    """
    ran = current.monotonic - previous.monotonic
    walked = current.wall - previous.wall
    away = max(ran, walked) - expected
    if away <= threshold:
        return None
    kind = PauseKind.SUSPEND if walked - ran > ran - expected else PauseKind.PROCESS
    return Pause(kind, away)
