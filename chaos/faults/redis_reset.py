"""Connections through the proxy are reset (TCP RST) - reset_peer toxic."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.toxic import ToxicFault


@dataclass
class RedisReset(ToxicFault):
    name = "redis-reset"
    summary = "reset_peer toxic: connections get a TCP RST after timeout_ms"
    toxic_type = "reset_peer"

    timeout_ms: int = 0
    proxy: str = "redis"
    stream: str = "upstream"
    toxicity: float = 1.0

    def attributes(self) -> dict:
        return {"timeout": self.timeout_ms}
