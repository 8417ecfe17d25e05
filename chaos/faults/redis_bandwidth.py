"""Bandwidth throttled through a proxy (KB/s)."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.toxic import ToxicFault


@dataclass
class RedisBandwidth(ToxicFault):
    name = "redis-bandwidth"
    summary = "bandwidth toxic (KB/s) on the Redis proxy"
    toxic_type = "bandwidth"

    rate_kbps: int = 10
    proxy: str = "redis"
    stream: str = "downstream"
    toxicity: float = 1.0

    def attributes(self) -> dict:
        return {"rate": self.rate_kbps}
