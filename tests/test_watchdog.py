"""The watchdog: wait, then connect, as the policy says; driven step by step with fake connections."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional

import pytest

from octohub_sync.backoff import Backoff
from octohub_sync.connection import CLOSE_TIMEOUT
from octohub_sync.reconnect import Decision, ReconnectPolicy
from octohub_sync.watchdog import Watchdog

DEAD_AFTER = 5.0


class FakeConnection:
    """What the watchdog reads and calls on a connection; nothing opens a socket."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.opened_at: Optional[float] = None
        self.closing_since: Optional[float] = None
        self.last_pong = 0.0
        self.close_code: Optional[int] = None
        self.error: Optional[str] = None
        self.started = self.alive = self.aborted = False
        self.thread = self  # the watchdog asks conn.thread.is_alive()

    def is_alive(self) -> bool:
        return self.alive

    def start(self) -> None:
        self.started = self.alive = True

    def open(self, at: float) -> None:
        self.opened_at = self.last_pong = at

    def end(self, close_code: Optional[int] = None) -> None:
        self.close_code, self.alive = close_code, False

    def begin_close(self) -> None:
        self.closing_since = self.now

    def abort(self) -> None:
        self.aborted = True


class Harness:
    def __init__(self, policy: ReconnectPolicy) -> None:
        self.made: list[FakeConnection] = []
        self.ended: list[tuple[FakeConnection, Decision]] = []
        self.reregistered = 0
        self.watchdog = Watchdog(connect=self.connect, policy=policy, dead_after=DEAD_AFTER,
                                 on_ended=lambda c, d: self.ended.append((c, d)),
                                 on_reregister=self.reregister, log=logging.LoggerAdapter(logging.getLogger("t"), {}))

    def connect(self, number: int) -> FakeConnection:
        conn = FakeConnection(number)
        self.made.append(conn)
        return conn

    def reregister(self) -> None:
        self.reregistered += 1

    def step(self, now: float) -> None:
        for conn in self.made:
            conn.now = now  # type: ignore[attr-defined]
        self.watchdog.step(now)

    @property
    def conn(self) -> FakeConnection:
        return self.made[-1]


POLICY = ReconnectPolicy(backoff=Backoff(1.0, 4.0), stable_after=30.0, hub_read_timeout=60.0)


@pytest.fixture
def h() -> Harness:
    return Harness(POLICY)


def test_connects_at_once_then_waits_for_the_attempt(h: Harness) -> None:
    h.step(0.0)
    assert len(h.made) == 1 and h.conn.started and h.conn.number == 1
    h.step(100.0)  # still opening: its own timeout bounds the handshake
    assert len(h.made) == 1 and not h.conn.aborted


def test_after_an_end_it_waits_as_decided_then_connects_again(h: Harness) -> None:
    h.step(0.0)
    h.conn.end()  # failed attempt
    h.step(1.0)
    [(conn, decision)] = h.ended
    assert conn is h.made[0] and decision.delay is not None and 0 <= decision.delay <= 0.5
    assert h.watchdog.policy.failures == 1
    h.step(1.0 + decision.delay + 0.001)
    assert len(h.made) == 2 and h.conn.number == 2


def test_next_attempt_not_before_the_delay(h: Harness) -> None:
    h.watchdog.policy = replace(POLICY, retries=3)  # nominal delay 4 s, at least 2 s
    h.step(0.0)
    h.conn.end()
    h.step(10.0)
    delay = h.ended[0][1].delay
    assert delay is not None and delay >= 2.0
    h.step(10.0 + delay - 0.01)
    assert len(h.made) == 1
    h.step(10.0 + delay)
    assert len(h.made) == 2


def test_dead_path_is_aborted(h: Harness) -> None:
    h.step(0.0)
    h.conn.open(at=1.0)
    h.step(1.0 + DEAD_AFTER)
    assert not h.conn.aborted
    h.step(1.0 + DEAD_AFTER + 0.1)
    assert h.conn.aborted


def test_replaced_notice_closes_with_a_handshake_and_counts_as_replaced(h: Harness) -> None:
    h.step(0.0)
    h.conn.open(at=1.0)
    h.watchdog.replaced()
    h.step(2.0)
    assert h.conn.closing_since == 2.0 and not h.conn.aborted
    h.conn.end(close_code=1000)
    h.step(2.5)
    assert h.watchdog.policy.short_drops == 1  # a replaced connection is a short drop
    assert len(h.made) == 1  # break before make: the next one only after the delay


def test_unanswered_close_is_aborted_after_close_timeout(h: Harness) -> None:
    h.step(0.0)
    h.conn.open(at=1.0)
    h.watchdog.replaced()
    h.step(2.0)
    h.step(2.0 + CLOSE_TIMEOUT)
    assert not h.conn.aborted
    h.step(2.0 + CLOSE_TIMEOUT + 0.1)
    assert h.conn.aborted


def test_reregisters_once_the_hub_cleaned_up_then_connects_at_once(h: Harness) -> None:
    h.step(0.0)
    h.conn.open(at=1.0)
    h.conn.end()  # abandoned without a close handshake at t=50
    h.step(50.0)
    due = h.watchdog.policy.reregister_at
    assert due == 50.0 + 60.0 + 6.0
    delay = h.ended[0][1].delay
    h.step(50.0 + delay)
    h.conn.open(at=51.0)
    h.conn.last_pong = due - 1.0  # alive and answering pings
    h.step(due - 0.1)
    assert h.conn.closing_since is None and h.reregistered == 0
    h.step(due)
    assert h.conn.closing_since == due and h.reregistered == 1
    h.conn.end(close_code=1000)  # our close handshake completed
    h.step(due + 0.1)
    assert h.ended[-1][1].planned and h.ended[-1][1].delay == 0.0
    assert len(h.made) == 3 and h.conn.started  # connected again in the same step
    assert h.watchdog.policy.reregister_at is None


def test_gives_up_and_stops_connecting() -> None:
    h = Harness(replace(POLICY, max_attempts=2))
    h.step(0.0)
    h.conn.end()
    h.step(1.0)
    h.step(2.0)
    h.conn.end()
    h.step(3.0)
    assert h.ended[-1][1].delay is None and h.watchdog.gave_up
    h.step(1000.0)
    assert len(h.made) == 2


def test_a_connection_that_stays_up_resets_the_policy(h: Harness) -> None:
    h.watchdog.policy = replace(POLICY, retries=4, failures=4, short_drops=2)
    h.step(0.0)
    h.conn.open(at=1.0)
    h.conn.last_pong = 30.0
    h.step(30.0)
    assert h.watchdog.policy.retries == 4
    h.step(31.0)
    assert (h.watchdog.policy.retries, h.watchdog.policy.failures, h.watchdog.policy.short_drops) == (0, 0, 0)
