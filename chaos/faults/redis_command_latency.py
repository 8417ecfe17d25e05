"""Per-command / per-key latency: e.g. slow SETs and fast GETs, or only the hot keys slow."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.redis_protocol import RedisProtocolFault


@dataclass
class RedisCommandLatency(RedisProtocolFault):
    name = "redis-command-latency"
    summary = "redis_latency toxic (cachestorm proxy only): matching commands/keys are slow"
    toxic_type = "redis_latency"

    latency_ms: int = 100
    jitter_ms: int = 0
    toxicity: float = 1.0         # share of matching commands delayed

    def attributes(self) -> dict:
        return {"latency": self.latency_ms, "jitter": self.jitter_ms, **super().attributes()}
