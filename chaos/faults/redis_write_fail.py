"""A share of cache writes fail (our proxy's protocol-aware redis_write_fail toxic); reads work."""

from __future__ import annotations

from dataclasses import dataclass, field

from cachestorm.errors import CachestormError
from chaos.faults.base import SettingError
from chaos.faults.toxic import ToxicFault


@dataclass
class RedisWriteFail(ToxicFault):
    name = "redis-write-fail"
    summary = "redis_write_fail toxic (cachestorm proxy only): a share of write commands fail"
    toxic_type = "redis_write_fail"

    rate: float = 1.0             # share of matching commands that fail
    mode: str = "error"           # error (an -ERR reply) | drop (no reply)
    commands: list[str] = field(default_factory=list)   # []: every write command
    proxy: str = "redis"
    stream: str = "upstream"

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.rate <= 1:
            raise SettingError(f"fault {self.name!r}: rate must be within 0..1", "rate")
        if self.mode not in ("error", "drop"):
            raise SettingError(f"fault {self.name!r}: mode must be 'error' or 'drop'", "mode")

    def _prepare(self) -> dict:
        state = super()._prepare()
        if not state["ours"]:
            raise CachestormError(f"fault {self.name!r} needs cachestorm's proxy (redis_write_fail is not a "
                                  "Toxiproxy toxic); use redis-oom or redis-acl-readonly instead")
        return state

    def attributes(self) -> dict:
        attributes = {"rate": self.rate, "mode": self.mode}
        if self.commands:
            attributes["commands"] = [c.upper() for c in self.commands]
        return attributes
