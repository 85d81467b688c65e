"""The pause detector: a process that did not run, a machine that slept, and what is neither."""
from __future__ import annotations

import pytest

from octohub_sync._node.clock_jumps import MIN_PAUSE, Pause, PauseKind, Tick, detect_pause, pause_threshold

#: The watchdog's usual sleep, and a keep-alive of 30 s (OCTOHUB_PING_INTERVAL's default).
SLEEP, THRESHOLD = 0.25, pause_threshold(30.0)
START = Tick(monotonic=1000.0, wall=1_700_000_000.0)


def later(monotonic: float, wall: float) -> Tick:
    return Tick(START.monotonic + monotonic, START.wall + wall)


def detect(monotonic: float, wall: float, threshold: float = THRESHOLD) -> Pause | None:
    return detect_pause(START, later(monotonic, wall), expected=SLEEP, threshold=threshold)


def test_a_tick_on_time_or_early_is_no_pause() -> None:
    assert detect(SLEEP, SLEEP) is None
    assert detect(0.01, 0.01) is None  # woken early (a connection ended)


def test_a_late_tick_on_the_monotonic_clock_is_a_process_pause() -> None:
    # SIGSTOP, a paused VM, a debugger: both clocks went on, this process did not run.
    assert detect(45.25, 45.25) == Pause(PauseKind.PROCESS, pytest.approx(45.0))


def test_a_wall_jump_the_monotonic_clock_missed_is_a_suspend() -> None:
    # Linux's CLOCK_MONOTONIC and macOS's mach_absolute_time stop while the machine sleeps.
    assert detect(0.3, 3600.3) == Pause(PauseKind.SUSPEND, pytest.approx(3600.05))


def test_a_suspend_the_monotonic_clock_counted_still_counts() -> None:
    # Windows's GetTickCount64 includes the time asleep: then the tick is simply late.
    assert detect(3600.3, 3600.3) == Pause(PauseKind.PROCESS, pytest.approx(3600.05))


@pytest.mark.parametrize("ping_interval", [2.0, 30.0])
def test_two_seconds_of_scheduling_jitter_is_no_pause(ping_interval: float) -> None:
    # A loaded 2-core machine can run the watchdog thread seconds late; that is no reason to reconnect.
    assert detect(2.25, 2.25, threshold=pause_threshold(ping_interval)) is None


@pytest.mark.parametrize("wall", [SLEEP + 1.5, SLEEP - 3.0, SLEEP - 3600.0])
def test_ntp_steps_and_a_clock_set_back_are_no_pause(wall: float) -> None:
    assert detect(SLEEP, wall) is None


def test_the_threshold_is_the_keep_alive_interval_with_a_floor() -> None:
    assert pause_threshold(30.0) == 30.0
    assert pause_threshold(1.0) == MIN_PAUSE
    assert detect(SLEEP + THRESHOLD, SLEEP + THRESHOLD) is None  # exactly the threshold: not beyond it
    assert detect(SLEEP + THRESHOLD + 0.1, SLEEP + THRESHOLD + 0.1) is not None
    assert detect(SLEEP, SLEEP + THRESHOLD + 0.1) is not None
