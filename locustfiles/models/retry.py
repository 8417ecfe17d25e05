"""Client retry policies: none, naive:N, backoff:N, budget:R.

A policy answers ``delay(attempt, retryable)``: seconds to wait before the next attempt, or None
to give up. ``attempt`` is the number of the attempt that just failed (1-based). Retryable
outcomes: 5xx, timeout, connection error (never 4xx: 404 is an answer).
"""

from __future__ import annotations

import random

from cachestorm.core.errors import CachestormError


class NoRetry:
    name = "none"

    def delay(self, attempt: int, retryable: bool) -> float | None:
        return None

    def on_request(self) -> None:
        pass


class Naive(NoRetry):
    """Immediate retries, up to ``retries`` more attempts: the amplifier behind retry storms."""

    def __init__(self, retries: int):
        self.retries = retries
        self.name = f"naive:{retries}"

    def delay(self, attempt, retryable):
        return 0.0 if retryable and attempt <= self.retries else None


class Backoff(NoRetry):
    """Exponential backoff with full jitter (AWS architecture blog): sleep U(0, min(cap, base * 2^(n-1)))."""

    def __init__(self, retries: int, base: float = 0.05, cap: float = 2.0, seed: int | None = None):
        self.retries, self.base, self.cap = retries, base, cap
        self.rng = random.Random(seed)
        self.name = f"backoff:{retries}"

    def delay(self, attempt, retryable):
        if not retryable or attempt > self.retries:
            return None
        return self.rng.uniform(0.0, min(self.cap, self.base * 2 ** (attempt - 1)))


class Budget(NoRetry):
    """Retry budget (Finagle/gRPC style): retries may add at most ``ratio`` of the request count.

    Each logical request deposits ``ratio`` tokens (bucket capped at ``cap``); a retry spends one.
    Retries back off like ``Backoff`` and stop after ``max_retries``.
    """

    def __init__(self, ratio: float, max_retries: int = 3, cap: float = 100.0, seed: int | None = None):
        self.ratio, self.max_retries, self.cap = ratio, max_retries, cap
        self.tokens = cap  # start full, like Finagle's minimum retries per second reserve
        self.backoff = Backoff(max_retries, seed=seed)
        self.name = f"budget:{ratio}"
        self.refused = 0

    def on_request(self):
        self.tokens = min(self.cap, self.tokens + self.ratio)

    def delay(self, attempt, retryable):
        if not retryable or attempt > self.max_retries:
            return None
        if self.tokens < 1.0 - 1e-9:  # 10 x 0.1 deposits must buy one retry despite rounding
            self.refused += 1
            return None
        self.tokens -= 1.0
        return self.backoff.delay(attempt, retryable)


def build_retry(spec: str | None, seed: int | None = None):
    spec = (spec or "none").strip()
    name, _, arg = spec.partition(":")
    try:
        if name == "none" and not arg:
            return NoRetry()
        if name == "naive":
            n = int(arg)
            if n < 1:
                raise ValueError
            return Naive(n)
        if name == "backoff":
            n = int(arg)
            if n < 1:
                raise ValueError
            return Backoff(n, seed=seed)
        if name == "budget":
            r = float(arg)
            if not 0 < r <= 1:
                raise ValueError
            return Budget(r, seed=seed)
    except ValueError:
        pass
    raise CachestormError(f"--retry {spec!r} is not understood; use none, naive:N, backoff:N (N >= 1) or budget:R (0 < R <= 1)")


def retryable(status: int | str) -> bool:
    return status in ("timeout", "conn_error") or (isinstance(status, int) and status >= 500)
