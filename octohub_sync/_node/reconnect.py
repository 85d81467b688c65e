"""Whether and when to connect again, as a value: no thread, no socket, no clock of its own.

Like urllib3's ``Retry``: :class:`ReconnectPolicy` is frozen, and :meth:`ReconnectPolicy.after`
takes how the last connection ended and returns the next policy plus a :class:`Decision`
(wait N s, or give up and why, and whether to warn about a duplicate pc_id). The watchdog
thread only waits and connects.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable, Optional

from .._config.settings import Settings
from .backoff import Backoff

__all__ = ["Decision", "Ending", "ReconnectPolicy", "reregister_margin"]

#: Connections dropped soon after opening this many times in a row suggest a duplicate pc_id.
SHORT_DROPS_WARNING = 3

#: Seconds at least between the end of a close handshake (either side's) and the next connection.
#: The Go server removes the pc_id from its table only after the handshake, when the connection's
#: handler ends (docs/protocol.md §9): a node registering again before that cleanup is forgotten.
CLEANUP_SETTLE = 1.0


def reregister_margin(read_timeout: float) -> float:
    """Seconds past the hub's read deadline before it has surely cleaned an abandoned connection up."""
    return max(2.0, 0.1 * read_timeout)


@dataclass(frozen=True)
class Ending:
    """How a connection ended.

    Attributes:
        lived: seconds it was open; None if it never opened (a failed attempt).
        close_code: the hub's close code; None when no close handshake happened.
        replaced: the hub said another connection with this pc_id replaced it.
        planned: the node closed it to register again (see :attr:`ReconnectPolicy.reregister_at`).
        resumed: the node dropped it after a pause of the process or machine (clock_jumps.py).
        error: what went wrong, for the give-up message.
    """

    lived: Optional[float]
    close_code: Optional[int]
    replaced: bool = False
    planned: bool = False
    resumed: bool = False
    error: str = ""


@dataclass(frozen=True)
class Decision:
    """What to do after a connection ended.

    Attributes:
        delay: seconds to wait before the next attempt; None means give up.
        give_up: why the node gives up (set exactly when ``delay`` is None).
        duplicate_drops: non-zero: warn that another node probably uses this pc_id; the number
            of short-lived connections in a row.
        planned: the node closed the connection itself to register again; nothing went wrong.
        resumed: the node dropped the connection after a pause; not the hub's fault.
    """

    delay: Optional[float]
    give_up: str = ""
    duplicate_drops: int = 0
    planned: bool = False
    resumed: bool = False


@dataclass(frozen=True)
class ReconnectPolicy:
    """The reconnect state of one node; every method returns a new policy."""

    #: Delays between attempts.
    backoff: Backoff = Backoff()
    #: Consecutive failed attempts before giving up; 0 never gives up (OCTOHUB_MAX_RECONNECT_ATTEMPTS).
    max_attempts: int = 0
    #: A connection up this long resets the backoff and the counts (OCTOHUB_STABLE_AFTER).
    stable_after: float = 30.0
    #: The hub's read deadline; 0 never re-registers (OCTOHUB_HUB_READ_TIMEOUT).
    hub_read_timeout: float = 60.0
    #: Retries since the last stable connection: the index into the backoff.
    retries: int = 0
    #: Consecutive connections that failed or did not stay up, counted against ``max_attempts``.
    failures: int = 0
    #: Consecutive connections the hub dropped soon after they opened.
    short_drops: int = 0
    #: When (monotonic) the hub has surely cleaned up every connection the node abandoned without a
    #: close handshake; a connection that opened before then must register again. None: nothing pending.
    reregister_at: Optional[float] = None

    @classmethod
    def from_settings(cls, s: Settings) -> ReconnectPolicy:
        return cls(backoff=Backoff(s.reconnect_interval, s.reconnect_max_interval),
                   max_attempts=s.max_reconnect_attempts, stable_after=s.stable_after,
                   hub_read_timeout=s.hub_read_timeout)

    def after(self, ending: Ending, now: float,
              rand: Callable[[], float] = random.random) -> tuple[ReconnectPolicy, Decision]:
        """The next policy and what to do, after a connection ended at ``now`` (monotonic)."""
        policy = self
        if ending.lived is not None and ending.close_code is None:
            # Abandoned without a close handshake: the hub may hold it until its read deadline, and a
            # hub that forgets the pc_id when that cleanup runs would then forget our next connection.
            policy = policy.abandoned(now)
        if ending.planned:
            return policy, Decision(delay=CLEANUP_SETTLE, planned=True)  # once the hub has cleaned it up
        if ending.resumed:  # neither a failure nor the hub's doing: no backoff, nothing counted
            return policy, Decision(delay=0.0, resumed=True)
        duplicate = 0
        if ending.lived is not None and ending.lived >= self.stable_after:
            policy = replace(policy, retries=0, failures=0, short_drops=0)
        else:
            policy = replace(policy, failures=policy.failures + 1)
            if ending.lived is not None and (ending.close_code is None or ending.replaced):
                policy = replace(policy, short_drops=policy.short_drops + 1)
                if policy.short_drops % SHORT_DROPS_WARNING == 0:
                    duplicate = policy.short_drops
        if self.max_attempts and policy.failures >= self.max_attempts:
            reason = (f"gave up after {policy.failures} consecutive failed connection attempts "
                      f"(OCTOHUB_MAX_RECONNECT_ATTEMPTS={self.max_attempts}); "
                      f"last error: {ending.error or 'connection closed'}")
            return policy, Decision(delay=None, give_up=reason, duplicate_drops=duplicate)
        delay = self.backoff.delay(policy.retries, rand)
        if ending.lived is not None and ending.close_code is not None:
            delay = max(delay, CLEANUP_SETTLE)  # the hub's cleanup of that connection comes first
        return replace(policy, retries=policy.retries + 1), Decision(delay=delay, duplicate_drops=duplicate)

    def abandoned(self, now: float) -> ReconnectPolicy:
        """A connection may have been abandoned at ``now`` (without a close handshake, or by a process
        that ended without stopping): register again once the hub has surely cleaned it up."""
        if not self.hub_read_timeout:
            return self
        due = now + self.hub_read_timeout + reregister_margin(self.hub_read_timeout)
        return replace(self, reregister_at=max(self.reregister_at or due, due))

    def stayed_up(self) -> ReconnectPolicy:
        """The current connection has been open ``stable_after`` seconds: the backoff starts over."""
        if self.retries or self.failures or self.short_drops:
            return replace(self, retries=0, failures=0, short_drops=0)
        return self

    def reregister_due(self, opened_at: float, now: float) -> tuple[ReconnectPolicy, bool]:
        """Whether the connection opened at ``opened_at`` must register again now."""
        if self.reregister_at is None or now < self.reregister_at:
            return self, False
        return replace(self, reregister_at=None), opened_at < self.reregister_at
