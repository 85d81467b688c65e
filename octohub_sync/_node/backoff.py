"""Reconnect delays as a value object: the delay is a pure function of the attempt."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with bounded jitter.

    Attempt 0 (the first retry after a drop) waits a random delay of at most
    ``first_max`` so that a fleet of nodes dropped together does not return in
    one burst. Attempt ``n >= 1`` waits between half and all of
    ``min(max_interval, interval * 2**(n-1))``.
    """

    #: Base delay of attempt 1, in seconds (OCTOHUB_RECONNECT_INTERVAL).
    interval: float = 5.0
    #: Ceiling of the nominal delay (OCTOHUB_RECONNECT_MAX_INTERVAL).
    max_interval: float = 60.0
    #: Upper bound of the random delay of attempt 0: spreads a fleet dropped at once over half a
    #: second while a single node is back well within a second.
    first_max: float = 0.5

    def nominal(self, attempt: int) -> float:
        """The delay before jitter."""
        if attempt <= 0:
            return self.first_max
        # The exponent is capped so that a node down for a year does not overflow a float.
        return min(self.max_interval, self.interval * 2 ** min(attempt - 1, 62))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The delay before retry number ``attempt`` (0-based), jitter included."""
        nominal = self.nominal(attempt)
        if attempt <= 0:
            return nominal * rand()
        return nominal * (0.5 + 0.5 * rand())
