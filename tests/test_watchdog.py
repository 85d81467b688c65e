"""The watchdog: wait, then connect, as the policy says; driven step by step with fake connections."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional

import pytest

from octohub_sync._node.backoff import Backoff
from octohub_sync._node.clock_jumps import Pause, PauseKind
from octohub_sync._transport.connection import CLOSE_TIMEOUT
from octohub_sync._transport.netpath import PROBE_TIMEOUT, PathCheck
from octohub_sync._node.reconnect import CLEANUP_SETTLE, Decision, ReconnectPolicy
from octohub_sync._node.watchdog import TICK, Watchdog

DEAD_AFTER = 5.0
#: Wall-clock time at monotonic 0 in the pause tests.
EPOCH = 1_700_000_000.0


class FakeConnection:
    """What the watchdog reads and calls on a connection; nothing opens a socket."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.opened_at: Optional[float] = None
        self.closing_since: Optional[float] = None
        self.last_pong = 0.0
        self.close_code: Optional[int] = None
        self.error: Optional[str] = None
        self.dialect: Optional[str] = "go"
        self.peer_address: Optional[tuple] = None
        self.local_address: Optional[tuple] = None
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
    def __init__(self, policy: ReconnectPolicy, *, dead_after: float = DEAD_AFTER, pause_after: float = 0.0) -> None:
        self.made: list[FakeConnection] = []
        self.ended: list[tuple[FakeConnection, Decision]] = []
        self.pauses: list[Pause] = []
        self.reregistered = 0
        self.watchdog = Watchdog(connect=self.connect, policy=policy, dead_after=dead_after,
                                 on_ended=lambda c, d: self.ended.append((c, d)),
                                 on_reregister=self.reregister, log=logging.LoggerAdapter(logging.getLogger("t"), {}),
                                 pause_after=pause_after, on_pause=self.pauses.append)

    def connect(self, number: int) -> FakeConnection:
        conn = FakeConnection(number)
        self.made.append(conn)
        return conn

    def reregister(self) -> None:
        self.reregistered += 1

    def step(self, now: float, wall: Optional[float] = None) -> None:
        for conn in self.made:
            conn.now = now  # type: ignore[attr-defined]
        self.watchdog.step(now, wall=wall)

    def steps(self, start: float, end: float, *, skew: float = 0.0) -> None:
        """Steps every TICK from ``start`` to ``end`` (monotonic), the wall clock ``EPOCH + skew`` ahead."""
        now = start
        while now <= end:
            self.step(now, wall=EPOCH + skew + now)
            now += TICK

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
    assert h.ended[-1][1].planned and h.ended[-1][1].delay == CLEANUP_SETTLE
    assert len(h.made) == 2  # the hub's cleanup of the closed connection comes after its close reply
    h.step(due + 0.1 + CLEANUP_SETTLE)
    assert len(h.made) == 3 and h.conn.started
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


# -- pauses of the process, suspends of the machine (_node/clock_jumps.py) -------------------------------------

#: A keep-alive of 10 s; the no-pong rule alone would wait a minute, so only the pause check acts.
PAUSE_AFTER, SLOW_DEATH = 10.0, 60.0


@pytest.fixture
def paused() -> Harness:
    # retries=3: the backoff would wait at least 2 s before another attempt.
    h = Harness(replace(POLICY, retries=3), dead_after=SLOW_DEATH, pause_after=PAUSE_AFTER)
    h.steps(0.0, 1.0)
    h.conn.open(at=0.5)
    h.steps(1.0, 3.0)
    return h


def test_a_late_tick_drops_the_connection_and_connects_again_at_once(paused: Harness) -> None:
    h = paused
    h.step(3.0 + 15.0, wall=EPOCH + 3.0 + 15.0)  # the process was stopped for 15 s
    assert h.conn.aborted and len(h.made) == 1
    assert [p.kind for p in h.pauses] == [PauseKind.PROCESS] and h.pauses[0].seconds == pytest.approx(15.0 - TICK)
    h.conn.end()
    h.step(18.1, wall=EPOCH + 18.1)
    [(_, decision)] = h.ended
    assert decision.resumed and decision.delay == 0.0
    assert len(h.made) == 2 and h.conn.started  # in the same step: no backoff for a pause
    assert h.watchdog.policy.failures == 0 and h.watchdog.policy.retries == 3


def test_a_wall_clock_jump_drops_the_connection_too(paused: Harness) -> None:
    h = paused
    h.step(3.3, wall=EPOCH + 3.3 + 600.0)  # suspended for 10 minutes: the monotonic clock stood still
    assert h.conn.aborted
    assert [p.kind for p in h.pauses] == [PauseKind.SUSPEND] and h.pauses[0].seconds == pytest.approx(600.3 - TICK)
    h.conn.end()
    h.step(3.4, wall=EPOCH + 603.4)
    assert len(h.made) == 2 and h.ended[0][1].delay == 0.0
    h.steps(3.5, 6.0, skew=600.0)  # the clocks agree again: no second pause
    assert len(h.pauses) == 1 and not h.conn.aborted


def test_a_suspend_while_waiting_for_the_next_attempt_ends_the_wait(paused: Harness) -> None:
    h = paused
    h.conn.end()  # lost: the backoff (retries=3) waits at least 2 s
    h.step(3.25, wall=EPOCH + 3.25)
    delay = h.ended[0][1].delay
    assert delay is not None and delay >= 2.0 and len(h.made) == 1
    h.step(3.5, wall=EPOCH + 3.5 + 3600.0)
    assert len(h.made) == 2  # the network of an hour ago says nothing about now


def test_scheduling_jitter_drops_nothing(paused: Harness) -> None:
    h = paused
    h.step(3.0 + 2.0, wall=EPOCH + 3.0 + 2.0)  # 2 s late: a loaded machine, not a pause
    h.step(5.0 + 0.25, wall=EPOCH + 5.0 + 0.25 + 1.5)  # an NTP step
    assert not h.conn.aborted and h.pauses == [] and len(h.made) == 1


def test_without_the_wall_clock_or_a_threshold_nothing_is_judged() -> None:
    h = Harness(POLICY, dead_after=SLOW_DEATH)  # pause_after=0: off
    h.steps(0.0, 1.0)
    h.conn.open(at=0.5)
    h.step(30.0, wall=EPOCH + 3600.0)
    assert not h.conn.aborted and h.pauses == []


# -- probes after a short pause or a network change (_transport/netpath.py) -----------------------------------

class Probed(Harness):
    """A watchdog with a path check whose probes and routes the test controls."""

    def __init__(self) -> None:
        self.probes: list[FakeConnection] = []
        self.route = "192.0.2.10"  # what the system would use now towards the hub
        path = PathCheck(probe=self.probes.append, log=logging.LoggerAdapter(logging.getLogger("t"), {}),
                         local_address=lambda peer: self.route)
        super().__init__(replace(POLICY, retries=3), dead_after=SLOW_DEATH, pause_after=PAUSE_AFTER)
        self.watchdog = Watchdog(connect=self.connect, policy=replace(POLICY, retries=3), dead_after=SLOW_DEATH,
                                 on_ended=lambda c, d: self.ended.append((c, d)), on_reregister=self.reregister,
                                 log=logging.LoggerAdapter(logging.getLogger("t"), {}), pause_after=PAUSE_AFTER,
                                 on_pause=self.pauses.append, path=path)

    def open(self, at: float) -> None:
        self.conn.open(at)
        self.conn.peer_address, self.conn.local_address = ("192.0.2.1", 8000), ("192.0.2.10", 50000)


@pytest.fixture
def probed() -> Probed:
    h = Probed()
    h.steps(0.0, 1.0)
    h.open(at=0.5)
    h.steps(1.0, 3.0)
    return h


def test_a_short_pause_is_probed_and_an_answer_keeps_the_connection(probed: Probed) -> None:
    h = probed
    h.step(3.0 + 7.0, wall=EPOCH + 10.0)  # stopped for 7 s: less than the keep-alive interval
    assert h.probes == [h.conn] and not h.conn.aborted and h.pauses[0].kind is PauseKind.PROCESS
    h.conn.last_pong = 10.2  # the answer
    h.steps(10.5, 14.0)
    assert not h.conn.aborted and len(h.made) == 1


def test_a_short_pause_without_an_answer_reconnects_without_backoff(probed: Probed) -> None:
    h = probed
    h.step(10.0, wall=EPOCH + 10.0)
    assert h.probes == [h.conn]
    h.step(10.0 + PROBE_TIMEOUT - 0.1, wall=EPOCH + 10.0 + PROBE_TIMEOUT - 0.1)
    assert not h.conn.aborted
    h.step(10.0 + PROBE_TIMEOUT, wall=EPOCH + 10.0 + PROBE_TIMEOUT)
    assert h.conn.aborted
    h.conn.end()
    h.step(13.0, wall=EPOCH + 13.0)
    [(_, decision)] = h.ended
    assert decision.delay == 0.0 and len(h.made) == 2  # at once: the hub is not at fault


def test_a_new_local_address_towards_the_hub_is_probed_once(probed: Probed) -> None:
    h = probed
    h.route = "198.51.100.7"  # a VPN came up
    h.step(3.5, wall=EPOCH + 3.5)
    h.step(4.0, wall=EPOCH + 4.0)
    assert h.probes == [h.conn]  # once, not at every look
    h.conn.last_pong = 4.1
    h.steps(4.5, 8.0)
    assert not h.conn.aborted and h.probes == [h.conn]


def test_a_new_route_ends_the_wait_for_the_next_attempt(probed: Probed) -> None:
    h = probed
    h.conn.end()  # lost: the backoff (retries=3) waits at least 2 s
    h.step(3.25, wall=EPOCH + 3.25)
    assert len(h.made) == 1
    h.step(3.5, wall=EPOCH + 3.5)
    assert len(h.made) == 1  # same route: the wait goes on
    h.route = "198.51.100.7"  # the network came back another way
    h.step(3.75, wall=EPOCH + 3.75)
    assert len(h.made) == 2
