"""cache-aside: GET; on a miss read PostgreSQL and SET with a TTL. Writes touch only PostgreSQL,
so a cached value can be stale for up to the TTL. The fill is a plain SET after the DB read:
a write landing in between is overwritten by the older value (set after invalidate)."""

from __future__ import annotations

from cachestorm.targets.strategies.base import CachedStrategy


class CacheAside(CachedStrategy):
    name = "cache-aside"
    fresh_after_write = False
