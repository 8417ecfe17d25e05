"""stale-while-revalidate: past the TTL a value is still served (X-Cache: stale) for up to
--max-stale seconds while one background refresh per key per process reloads it; after that bound
it is gone and the read is a miss. Writes overwrite the cached value (never evict), so readers
never pay a miss after a write. A refresh that read the row before a write must not put the older
version back over the write's overwrite: fills are versioned, so the declared bound (0: fresh once
a write returned) is the truth."""

from __future__ import annotations

from cachestorm.targets.strategies.base import CachedStrategy, Key


class StaleWhileRevalidate(CachedStrategy):
    name = "stale-while-revalidate"
    serves_stale = True
    fill_versioned = True

    async def after_commit(self, key: Key, record: dict) -> None:
        entry, px_ms = self.entry_for(record)
        await self.cache.overwrite(key.redis, entry, px_ms)
