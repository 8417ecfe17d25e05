"""A replica is promoted: connections reset, (optionally) no server for down_ms, writes refused for
refuse_ms (-READONLY, or everything -LOADING), then accepted."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.base import SettingError
from cachestorm.chaos.faults.redis_protocol import RedisProtocolFault


@dataclass
class RedisFailover(RedisProtocolFault):
    name = "redis-failover"
    summary = "redis_failover toxic (cachestorm proxy only): reset, writes refused briefly, then accepted"
    toxic_type = "redis_failover"

    down_ms: int = 0
    refuse_ms: int = 2000
    error: str = "READONLY"       # READONLY (writes refused) | LOADING (every command) | "CODE message"
    toxicity: float = 1.0         # share of connections that see the failover

    def check_settings(self) -> None:
        if self.window_s is not None and (self.down_ms + self.refuse_ms) / 1000 > self.window_s:
            raise SettingError(f"fault {self.name!r}: down_ms + refuse_ms ({self.down_ms + self.refuse_ms} ms) "
                               f"is longer than the fault's window ({self.window_s:g} s)", "refuse_ms")

    def touched(self, applied: dict, reverted: dict) -> dict | None:
        counted = reverted.get("counted")
        if not isinstance(counted, dict):
            return None
        proxy = self.state.get("proxy") if self.state else "?"
        # connections reset (those open or opened in the window) or commands refused
        return {"count": counted["connections"] + counted["commands_faulted"],
                "unit": "connections failed over + commands refused",
                "source": "the proxy's toxics_applied_by_type and commands_faulted[redis_failover] over the window",
                "why": f"no connection of proxy {proxy} was open or opened during the window"}

    def attributes(self) -> dict:
        return {"down": self.down_ms, "refuse": self.refuse_ms, "error": self.error, **super().attributes()}
