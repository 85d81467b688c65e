"""ReconnectPolicy: every decision, as plain values (no thread, no socket, no clock)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from octohub_sync import load_settings
from octohub_sync._node.backoff import Backoff
from octohub_sync._node.reconnect import CLEANUP_SETTLE, SHORT_DROPS_WARNING, Decision, Ending, ReconnectPolicy, reregister_margin

#: Jitter pinned to its top: every delay is its nominal value.
TOP = lambda: 1.0  # noqa: E731

POLICY = ReconnectPolicy(backoff=Backoff(1.0, 8.0, first_max=0.5), max_attempts=0, stable_after=30.0,
                         hub_read_timeout=60.0)
FAILED = Ending(lived=None, close_code=None, error="ConnectionRefusedError: refused")
STABLE_DROP = Ending(lived=100.0, close_code=None)
STABLE_CLOSE = Ending(lived=100.0, close_code=1000)
SHORT_DROP = Ending(lived=1.0, close_code=None)
SHORT_CLOSE = Ending(lived=1.0, close_code=1000)


def run(policy: ReconnectPolicy, endings: list[Ending], now: float = 0.0) -> tuple[ReconnectPolicy, list[Decision]]:
    decisions = []
    for ending in endings:
        policy, decision = policy.after(ending, now, rand=TOP)
        decisions.append(decision)
    return policy, decisions


def test_from_settings_takes_the_five_settings() -> None:
    s = load_settings({"reconnect_interval": 2, "reconnect_max_interval": 20, "max_reconnect_attempts": 7,
                       "stable_after": 12, "hub_read_timeout": 45}, env_file=False, environ={})
    policy = ReconnectPolicy.from_settings(s)
    assert policy.backoff == Backoff(2.0, 20.0)
    assert (policy.max_attempts, policy.stable_after, policy.hub_read_timeout) == (7, 12.0, 45.0)
    assert (policy.retries, policy.failures, policy.short_drops, policy.reregister_at) == (0, 0, 0, None)


def test_failed_attempts_back_off_exponentially_up_to_the_ceiling() -> None:
    policy, decisions = run(POLICY, [FAILED] * 6)
    assert [d.delay for d in decisions] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert (policy.retries, policy.failures, policy.short_drops) == (6, 6, 0)
    assert not any(d.give_up or d.duplicate_drops or d.planned for d in decisions)


def test_a_policy_is_a_value() -> None:
    after, _ = POLICY.after(FAILED, 0.0, rand=TOP)
    assert POLICY.failures == 0 and after.failures == 1  # the old one is untouched
    with pytest.raises(AttributeError):
        after.failures = 5  # type: ignore[misc]


def test_a_stable_connection_resets_the_backoff_and_counts() -> None:
    tired, _ = run(POLICY, [FAILED] * 4)
    policy, [decision] = run(tired, [STABLE_DROP])
    assert decision.delay == 0.5  # the quick first retry again
    assert (policy.retries, policy.failures, policy.short_drops) == (1, 0, 0)


def test_after_a_close_handshake_the_next_attempt_waits_for_the_hubs_cleanup() -> None:
    tired, _ = run(POLICY, [FAILED] * 4)
    policy, [decision] = run(tired, [STABLE_CLOSE])
    assert decision.delay == CLEANUP_SETTLE  # not the quick 0.5 s: the hub forgets the pc_id after the handshake
    assert (policy.retries, policy.failures, policy.short_drops) == (1, 0, 0)
    _, [failed] = run(POLICY, [FAILED])
    assert failed.delay == 0.5  # a failed attempt left nothing at the hub to clean up


def test_stayed_up_resets_only_when_there_is_something_to_reset() -> None:
    tired, _ = run(POLICY, [FAILED, SHORT_DROP])
    fresh = tired.stayed_up()
    assert (fresh.retries, fresh.failures, fresh.short_drops) == (0, 0, 0)
    assert POLICY.stayed_up() is POLICY


def test_short_drops_warn_about_a_duplicate_pc_id_every_third_time() -> None:
    policy, decisions = run(POLICY, [SHORT_DROP] * (2 * SHORT_DROPS_WARNING))
    assert [d.duplicate_drops for d in decisions] == [0, 0, 3, 0, 0, 6]
    assert policy.short_drops == 6 and policy.failures == 6
    # The backoff is not reset by connections that did not stay up: no storm.
    assert [d.delay for d in decisions] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_a_short_clean_close_is_a_failure_but_no_duplicate_sign() -> None:
    policy, decisions = run(POLICY, [SHORT_CLOSE] * 3)
    assert policy.failures == 3 and policy.short_drops == 0
    assert not any(d.duplicate_drops for d in decisions)


def test_a_replaced_connection_counts_as_a_short_drop_even_when_closed_cleanly() -> None:
    policy, _ = run(POLICY, [replace(SHORT_CLOSE, replaced=True)])
    assert policy.short_drops == 1


def test_gives_up_after_max_attempts_with_the_reason() -> None:
    policy = replace(POLICY, max_attempts=3)
    policy, decisions = run(policy, [FAILED] * 3)
    assert [d.delay for d in decisions[:2]] == [0.5, 1.0]
    final = decisions[2]
    assert final.delay is None
    assert final.give_up == ("gave up after 3 consecutive failed connection attempts "
                             "(OCTOHUB_MAX_RECONNECT_ATTEMPTS=3); last error: ConnectionRefusedError: refused")


def test_give_up_without_an_error_text_says_closed() -> None:
    policy = replace(POLICY, max_attempts=1)
    _, [decision] = run(policy, [SHORT_CLOSE])
    assert decision.delay is None and decision.give_up.endswith("last error: connection closed")


def test_zero_max_attempts_never_gives_up() -> None:
    _, decisions = run(POLICY, [FAILED] * 200)
    assert all(d.delay is not None for d in decisions)


def test_abandoned_connection_schedules_reregistration() -> None:
    policy, _ = run(POLICY, [STABLE_DROP], now=100.0)
    assert policy.reregister_at == 100.0 + 60.0 + reregister_margin(60.0)
    # A later abandoned connection pushes it later; an earlier due time never wins.
    later, _ = run(policy, [SHORT_DROP], now=130.0)
    assert later.reregister_at == 130.0 + 60.0 + reregister_margin(60.0)


@pytest.mark.parametrize("ending", [FAILED, STABLE_CLOSE, SHORT_CLOSE])
def test_no_reregistration_after_a_close_handshake_or_a_failed_attempt(ending: Ending) -> None:
    policy, _ = run(POLICY, [ending], now=5.0)
    assert policy.reregister_at is None


def test_reregistration_off_with_zero_read_timeout() -> None:
    policy, _ = run(replace(POLICY, hub_read_timeout=0.0), [STABLE_DROP])
    assert policy.reregister_at is None


def test_reregister_due_only_for_a_connection_opened_before_the_hub_cleaned_up() -> None:
    policy = replace(POLICY, reregister_at=200.0)
    assert policy.reregister_due(opened_at=150.0, now=199.0) == (policy, False)  # not yet
    cleared, due = policy.reregister_due(opened_at=150.0, now=200.0)
    assert due and cleared.reregister_at is None
    cleared, due = policy.reregister_due(opened_at=201.0, now=250.0)  # opened after: already safe
    assert not due and cleared.reregister_at is None
    assert POLICY.reregister_due(opened_at=0.0, now=1e9) == (POLICY, False)


def test_a_planned_close_reconnects_after_the_cleanup_without_counting_a_failure() -> None:
    tired, _ = run(POLICY, [FAILED] * 2)
    policy, [decision] = run(tired, [Ending(lived=5.0, close_code=1000, planned=True)])
    assert decision == Decision(delay=CLEANUP_SETTLE, planned=True)
    assert (policy.retries, policy.failures) == (tired.retries, tired.failures)


def test_a_planned_close_that_failed_its_handshake_schedules_another() -> None:
    policy, [decision] = run(POLICY, [Ending(lived=5.0, close_code=None, planned=True)], now=10.0)
    assert decision.planned and policy.reregister_at == 10.0 + 60.0 + reregister_margin(60.0)


def test_margin_is_two_seconds_or_a_tenth() -> None:
    assert reregister_margin(1.0) == 2.0
    assert reregister_margin(60.0) == 6.0
