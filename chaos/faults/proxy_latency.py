"""Latency (and jitter) on every chunk through a proxy."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.toxic import ToxicFault


@dataclass
class ProxyLatency(ToxicFault):
    name = "redis-latency"
    summary = "latency/jitter toxic on the Redis proxy"
    toxic_type = "latency"

    latency_ms: int = 100
    jitter_ms: int = 0
    proxy: str = "redis"
    stream: str = "downstream"
    toxicity: float = 1.0

    def attributes(self) -> dict:
        return {"latency": self.latency_ms, "jitter": self.jitter_ms}
