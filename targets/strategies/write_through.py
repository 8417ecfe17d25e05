"""write-through: a write commits, then SETs the committed row into the cache (with the TTL).
If the SET fails the old value stays until the TTL; two racing writes can install the older row."""

from __future__ import annotations

from cachestorm.targets.strategies.base import CachedStrategy, Key


class WriteThrough(CachedStrategy):
    name = "write-through"

    async def after_commit(self, key: Key, record: dict) -> None:
        entry, px_ms = self.entry_for(record)
        await self.cache.overwrite(key.redis, entry, px_ms)
