"""A blackhole partition: data stops in both directions and connections hang (timeout toxic 0)."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.toxic import ToxicFault


@dataclass
class RedisBlackhole(ToxicFault):
    name = "redis-blackhole"
    summary = "timeout toxic 0 on both streams: requests hang until the client times out"
    toxic_type = "timeout"

    proxy: str = "redis"
    stream: str = "both"   # upstream too, so commands do not reach the server either

    def attributes(self) -> dict:
        return {"timeout": 0}
