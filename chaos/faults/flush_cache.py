"""A cold start: the whole cache is emptied (FLUSHDB)."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.base import Fault


@dataclass
class FlushCache(Fault):
    name = "flush-cache"
    summary = "FLUSHDB: every cached key is gone (cold start)"
    touches = ("redis",)
    one_shot = True

    def _apply(self) -> dict:
        client = self.redis_admin()
        try:
            keys = client.dbsize()
            client.flushdb()
        finally:
            client.close()
        return {"keys": int(keys)}

    def touched(self, applied: dict, reverted: dict) -> dict | None:
        return {"count": applied["keys"], "unit": "keys flushed", "source": "Redis (DBSIZE before FLUSHDB)",
                "why": "the cache was already empty"}
