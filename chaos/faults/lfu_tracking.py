"""Switch Redis to an LFU eviction policy so hot keys can be found by OBJECT FREQ."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.base import Fault, SettingError


@dataclass
class LfuTracking(Fault):
    name = "lfu-tracking"
    summary = "CONFIG SET maxmemory-policy allkeys-lfu (so hot-key-expiry source=lfu works); restores it"
    touches = ("redis",)

    policy: str = "allkeys-lfu"

    def validate(self) -> None:
        if "lfu" not in self.policy:
            raise SettingError(f"fault {self.name!r}: policy must be an LFU policy, got {self.policy!r}", "policy")

    def _prepare(self) -> dict:
        client = self.redis_admin()
        try:
            return {"maxmemory-policy": client.config_get("maxmemory-policy")["maxmemory-policy"]}
        finally:
            client.close()

    def _apply(self) -> dict:
        client = self.redis_admin()
        try:
            client.config_set("maxmemory-policy", self.policy)
        finally:
            client.close()
        return {"previous": self.state}

    def expiry_actions(self) -> list[dict]:
        return [self.redis_action([["CONFIG", "SET", "maxmemory-policy", str(self.state["maxmemory-policy"])]])]

    def _revert(self) -> dict:
        client = self.redis_admin()
        try:
            client.config_set("maxmemory-policy", self.state["maxmemory-policy"])
        finally:
            client.close()
        return {"restored": self.state}
