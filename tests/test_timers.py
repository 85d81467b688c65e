"""The timers loop: asleep while the node is idle, woken by work, ticking while busy."""
from __future__ import annotations

import logging
import threading
import time

from octohub_sync._node.timers import IDLE_SLEEP, TICK, Alarm, Timers

from .conftest import wait_until

LOG = logging.LoggerAdapter(logging.getLogger("t"), {})


def test_a_ring_ends_an_idle_sleep() -> None:
    alarm = Alarm()
    alarm.doze()
    alarm.ring()  # work arrived while the loop looked for it
    started = time.monotonic()
    alarm.sleep(IDLE_SLEEP)
    assert time.monotonic() - started < 1.0


def test_rings_do_not_make_a_busy_loop_turn_faster() -> None:
    """A busy loop ticks anyway: waking it for every task would cost the task path a wake-up each."""
    looks: list[float] = []
    alarm = Alarm()
    timers = Timers(expire=looks.append, status=lambda: None, status_interval=0, log=LOG, busy=lambda: True,
                    alarm=alarm)
    timers.start()
    try:
        until = time.monotonic() + 1.0
        rings = 0
        while time.monotonic() < until:  # a task arriving every few microseconds, for a second
            alarm.ring()
            rings += 1
        turns = sum(1 for t in looks if t >= until - 1.0)
    finally:
        timers.stop()
    assert rings > 1000 and turns <= 2 * (1.0 / TICK) + 2, (rings, turns)


def test_an_idle_loop_sleeps_until_work_arrives_then_ticks() -> None:
    looks: list[float] = []
    busy = threading.Event()
    alarm = Alarm()
    timers = Timers(expire=looks.append, status=lambda: None, status_interval=0, log=LOG, busy=busy.is_set,
                    alarm=alarm)
    timers.start()
    try:
        assert wait_until(lambda: len(looks) >= 1, 5)
        assert not wait_until(lambda: len(looks) >= 2, 1.0)  # idle: no look for a second
        busy.set()
        alarm.ring()
        assert wait_until(lambda: len(looks) >= 2, 1.0)  # at once
        assert wait_until(lambda: len(looks) >= 6, 5)  # then every TICK while busy
    finally:
        timers.stop()


def test_the_keep_alive_is_posted_when_due_and_planned_from_when_it_went_out() -> None:
    sent: list[float] = []
    due = [time.monotonic() + 0.3]

    def keep_alive() -> None:
        sent.append(time.monotonic())
        due[0] = sent[-1] + 0.3

    timers = Timers(expire=lambda now: None, status=lambda: None, status_interval=0, log=LOG, busy=lambda: False,
                    keep_alive_due=lambda: due[0], keep_alive=keep_alive)
    timers.start()
    try:
        assert wait_until(lambda: len(sent) >= 3, 5)
    finally:
        timers.stop()
    assert all(0.25 <= b - a < 0.9 for a, b in zip(sent, sent[1:])), sent
