"""Reconnect delays: the first retry is short and random, later ones grow, cap, and jitter within a range."""
from __future__ import annotations

from octohub_sync._node.backoff import Backoff


def test_first_retry_is_short_and_random() -> None:
    b = Backoff(interval=5, max_interval=60)
    assert b.delay(0, rand=lambda: 0.0) == 0
    assert b.delay(0, rand=lambda: 0.999) < 1.0


def test_backoff_grows_and_caps_with_bounded_jitter() -> None:
    b = Backoff(interval=5, max_interval=60)
    assert [b.nominal(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    for n in range(1, 200):
        assert b.nominal(n) / 2 <= b.delay(n, rand=lambda: 0.0) <= b.delay(n, rand=lambda: 0.999) <= b.nominal(n)
