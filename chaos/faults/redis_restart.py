"""Redis restarts: the cache is lost (the conductor's callback restarts the server)."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.base import Fault

from cachestorm.core.errors import CachestormError


@dataclass
class RedisRestart(Fault):
    name = "redis-restart"
    summary = "restart Redis through the conductor's callback: every cached key is lost"
    touches = ("redis",)
    one_shot = True

    def check_settings(self) -> None:
        if self.context.restart_redis is None:
            raise CachestormError(f"fault {self.name!r} needs a way to restart Redis (ChaosContext.restart_redis); "
                                  "use flush-cache for a cold start without a restart")

    def _apply(self) -> dict:
        self.context.restart_redis()
        return {"restarted": True}
