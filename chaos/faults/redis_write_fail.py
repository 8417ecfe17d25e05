"""A share of cache writes fail (our proxy's protocol-aware redis_write_fail toxic); reads work."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.base import SettingError
from cachestorm.chaos.faults.redis_protocol import RedisProtocolFault


@dataclass
class RedisWriteFail(RedisProtocolFault):
    name = "redis-write-fail"
    summary = "redis_write_fail toxic (cachestorm proxy only): a share of write commands fail"
    toxic_type = "redis_write_fail"

    rate: float = 1.0             # share of matching commands that fail
    mode: str = "error"           # error (an -ERR reply) | drop (no reply)

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.rate <= 1:
            raise SettingError(f"fault {self.name!r}: rate must be within 0..1", "rate")
        if self.mode not in ("error", "drop"):
            raise SettingError(f"fault {self.name!r}: mode must be 'error' or 'drop'", "mode")

    def attributes(self) -> dict:
        return {"rate": self.rate, "mode": self.mode, **super().attributes()}
