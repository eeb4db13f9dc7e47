"""How long the connect loop waits between failed attempts."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with full jitter, about 1 s doubling up to 60 s."""

    def __init__(self, first: float = 1.0, cap: float = 60.0, rng: random.Random | None = None):
        self.first, self.cap = first, cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        # The exponent stops growing long after the cap is reached: 2.0**1024 would overflow, and a
        # bot offline for a day at the cap fails well over 1,000 times.
        ceiling = min(self.cap, self.first * 2.0 ** min(self.failures, 64))
        self.failures += 1
        # Half fixed, half random: never 0 (no hammering), never in lockstep with another instance.
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0
