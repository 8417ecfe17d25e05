"""A share of commands get an error reply (-OOM, -LOADING, -READONLY, -BUSY or a custom one)."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.redis_protocol import RedisProtocolFault


@dataclass
class RedisErrorReply(RedisProtocolFault):
    name = "redis-error-reply"
    summary = "redis_error toxic (cachestorm proxy only): matching commands/keys get -OOM/-LOADING/-READONLY/-BUSY"
    toxic_type = "redis_error"

    error: str = "READONLY"       # OOM | LOADING | READONLY | BUSY | "CODE message"
    toxicity: float = 1.0         # share of matching commands refused

    def attributes(self) -> dict:
        return {"error": self.error, **super().attributes()}
