"""invalidate-on-write: entries have no TTL; each write commits, then deletes the key.
Correctness rests on the delete alone: a lost delete leaves the old value until the next write."""

from __future__ import annotations

from cachestorm.targets.strategies.base import CachedStrategy, Key


class InvalidateOnWrite(CachedStrategy):
    name = "invalidate-on-write"
    expires = False

    async def after_commit(self, key: Key, record: dict) -> None:
        await self.cache.invalidate(key.redis)
