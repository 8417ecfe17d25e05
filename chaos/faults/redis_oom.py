"""Cache writes fail with OOM while reads work: maxmemory below used memory, policy noeviction."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.base import Fault, SettingError


@dataclass
class RedisOom(Fault):
    name = "redis-oom"
    summary = "maxmemory below used_memory + noeviction: SET fails with OOM, GET works"
    touches = ("redis",)

    share: float = 0.5      # maxmemory = share x used_memory (below 1, so every write is refused)

    def validate(self) -> None:
        if not 0 < self.share < 1:
            raise SettingError(f"fault {self.name!r}: share must be between 0 and 1 (exclusive)", "share")

    def _prepare(self) -> dict:
        client = self.redis_admin()
        try:
            config = client.config_get("maxmemory*")
        finally:
            client.close()
        return {"maxmemory": config["maxmemory"], "maxmemory-policy": config["maxmemory-policy"]}

    def _apply(self) -> dict:
        client = self.redis_admin()
        try:
            used = int(client.info("memory")["used_memory"])
            limit = max(1, int(used * self.share))
            # policy first: with an evicting policy a low maxmemory would evict the whole cache
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", str(limit))
        finally:
            client.close()
        return {"used_memory": used, "maxmemory": limit, "previous": self.state}

    def expiry_actions(self) -> list[dict]:
        # the same order as _revert: maxmemory first
        return [self.redis_action([["CONFIG", "SET", "maxmemory", str(self.state["maxmemory"])],
                                   ["CONFIG", "SET", "maxmemory-policy", str(self.state["maxmemory-policy"])]])]

    def _revert(self) -> dict:
        client = self.redis_admin()
        try:
            # maxmemory first: restoring an evicting policy under the low limit would evict everything
            client.config_set("maxmemory", self.state["maxmemory"])
            client.config_set("maxmemory-policy", self.state["maxmemory-policy"])
        finally:
            client.close()
        return {"restored": self.state}
