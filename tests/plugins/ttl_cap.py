"""ttl-cap (a test plug-in protection): no fill lives longer than CAP_S seconds, whatever the TTL."""

from __future__ import annotations

from cachestorm.targets.protections.base import Protection

CAP_S = 2.0


class TtlCap(Protection):
    name = "ttl-cap"

    def fill_ttl(self, ttl: float) -> float:
        return min(ttl, CAP_S)
