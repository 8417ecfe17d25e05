"""redis-marker (a test plug-in fault): sets a marker key in Redis while it applies; revert deletes it."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.base import Fault


@dataclass
class RedisMarker(Fault):
    name = "redis-marker"
    summary = "SET a marker key while the fault lasts"
    touches = ("redis",)

    key: str = "cachestorm:test-marker"

    def _apply(self) -> dict:
        client = self.redis_admin()
        try:
            client.set(self.key, "on")
        finally:
            client.close()
        return {"key": self.key}

    def _revert(self) -> dict:
        client = self.redis_admin()
        try:
            return {"deleted": int(client.delete(self.key))}
        finally:
            client.close()
