"""read-through: the cache owns the loader (reads as cache-aside), with a TTL and explicit
invalidation: a write commits, then deletes the key. Between the commit and the delete, and
forever if the delete is lost, readers get the old value until the TTL ends it."""

from __future__ import annotations

from cachestorm.targets.strategies.base import CachedStrategy, Key


class ReadThrough(CachedStrategy):
    name = "read-through"

    async def after_commit(self, key: Key, record: dict) -> None:
        await self.cache.invalidate(key.redis)
