"""Open-model arrival schedules: the gap (s) to the next arrival at the current rate."""

from __future__ import annotations

import math
import random

from cachestorm.core.errors import CachestormError


def _check_rate(rate: float) -> float:
    if not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
        raise CachestormError(f"--rate must be > 0 requests/s for an open-model schedule (got {rate!r})")
    return float(rate)


class Gaps:
    """Gaps for a rate that may change between arrivals (shapes): ``gaps(rate)`` -> seconds."""

    def __init__(self, kind: str, seed: int | None = None):
        if kind not in ("constant", "poisson"):
            raise CachestormError(f"--arrivals {kind!r} is unknown; use constant or poisson")
        self.poisson = kind == "poisson"
        self.rng = random.Random(seed)

    def __call__(self, rate: float) -> float:
        rate = _check_rate(rate)
        return self.rng.expovariate(rate) if self.poisson else 1.0 / rate
