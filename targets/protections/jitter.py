"""jitter: each fill's TTL is the TTL times a uniform factor in [1 - j, 1 + j] (--jitter, default
0.1), so keys filled together do not expire together. It does nothing for one hot key."""

from __future__ import annotations

import random

from cachestorm.targets.protections.base import Protection


class Jitter(Protection):
    name = "jitter"

    def fill_ttl(self, ttl: float) -> float:
        j = self.settings.jitter
        return ttl * random.uniform(1.0 - j, 1.0 + j)

    def fill_ttl_range(self, low: float, high: float) -> tuple[float, float]:
        j = self.settings.jitter
        return low * (1.0 - j), high * (1.0 + j)
