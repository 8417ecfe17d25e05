"""lease: Meta-memcache-style leases. A miss gets a token (Lua: value, or a fresh token if nobody
holds the lease, or "wait"). A fill is installed only while its token is current; every write's
invalidation deletes the lease, so a fill that read the DB before a write is refused
(cachestorm_lease_refused_total) instead of installing the old value. Waiters poll the cache."""

from __future__ import annotations

import asyncio
import time

from cachestorm.targets.cache import lease_key
from cachestorm.targets.protections.base import NextLoad, Protection
from cachestorm.targets.strategies.base import ReadResult

POLL_S = (0.002, 0.02)


class Lease(Protection):
    name = "lease"
    order = 20

    async def around_load(self, key, next_load: NextLoad, ctx):
        lease_ms = self.settings.lock_ms
        deadline = time.monotonic() + lease_ms / 1000.0
        delay = POLL_S[0]
        waited = False
        while True:
            kind, payload = await self.cache.lease_get(key.redis, lease_ms, ignore_value=ctx.refresh)
            if kind == "value":
                if payload.fresh(time.time()):
                    return ReadResult.of(payload, "hit")
            elif kind == "token":
                break
            elif ctx.refresh:
                return ctx.held  # another reader holds the lease and refreshes
            if not waited:
                waited = True
                self.metrics.lease_waits.inc()
            if time.monotonic() > deadline:
                ctx.fill = False
                return await next_load(ctx)
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_S[1])
        ctx.guard = (lease_key(key.redis), payload)
        try:
            return await next_load(ctx)
        finally:
            try:  # a lease not consumed by a fill (absent key, failure) must not block others
                await self.cache.lease_release(key.redis, payload)
            except Exception:  # noqa: BLE001
                pass
