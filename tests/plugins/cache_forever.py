"""cache-forever (a test plug-in strategy): entries have no TTL; a write overwrites the cached row."""

from __future__ import annotations

from cachestorm.targets.strategies.base import CachedStrategy, Key


class CacheForever(CachedStrategy):
    name = "cache-forever"
    expires = False

    async def after_commit(self, key: Key, record: dict) -> None:
        entry, px_ms = self.entry_for(record)
        await self.cache.overwrite(key.redis, entry, px_ms)
