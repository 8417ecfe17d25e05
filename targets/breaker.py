"""A circuit breaker: after N consecutive failures, fail fast for a cooldown, then let one call probe."""

from __future__ import annotations

import time


class CircuitBreaker:
    def __init__(self, failures: int = 5, cooldown_s: float = 1.0, clock=time.monotonic):
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.consecutive = 0
        self.open_until = 0.0

    def allow(self) -> bool:
        """False while open. After the cooldown one caller gets through (half-open) and re-arms it."""
        if self.consecutive < self.threshold:
            return True
        now = self.clock()
        if now < self.open_until:
            return False
        self.open_until = now + self.cooldown_s  # this caller probes; the others keep failing fast
        return True

    def success(self) -> None:
        self.consecutive = 0

    def failure(self) -> None:
        self.consecutive += 1
        if self.consecutive >= self.threshold:
            self.open_until = self.clock() + self.cooldown_s

    @property
    def is_open(self) -> bool:
        return self.consecutive >= self.threshold and self.clock() < self.open_until
