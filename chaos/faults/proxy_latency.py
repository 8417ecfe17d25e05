"""Latency (and jitter) on every chunk through a proxy. The base of redis-latency (redis_latency.py),
db-latency (db_latency.py) and db-slow-recompute (db_slow_recompute.py)."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.toxic import ToxicFault


@dataclass
class ProxyLatency(ToxicFault):
    toxic_type = "latency"

    latency_ms: int = 100
    jitter_ms: int = 0
    proxy: str = ""  # each fault names its service's proxy
    stream: str = "downstream"
    toxicity: float = 1.0

    def attributes(self) -> dict:
        return {"latency": self.latency_ms, "jitter": self.jitter_ms}
