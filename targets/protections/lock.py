"""lock: a distributed recompute lock (SET NX PX) with a fencing token. The holder loads and fills;
its fill is applied only while its token still holds the lock, so a holder that outlived its lock
(paused, slow) cannot overwrite. Others poll the cache until the value appears or the lock is
gone; after --lock-ms they load themselves without filling. Writes do not touch the lock, so a
fill racing an invalidation can still install an old value (use lease for that)."""

from __future__ import annotations

import asyncio
import time

from cachestorm.targets.cache import lock_key
from cachestorm.targets.protections.base import NextLoad, Protection
from cachestorm.targets.strategies.base import ReadResult

POLL_S = (0.002, 0.02)  # first and largest poll interval


class Lock(Protection):
    name = "lock"
    order = 20

    async def around_load(self, key, next_load: NextLoad, ctx):
        lock_ms = self.settings.lock_ms
        token = await self.cache.lock_acquire(key.redis, lock_ms)
        if token is None and ctx.refresh:
            return ctx.held  # someone else is refreshing: keep serving what we hold
        if token is None:
            self.metrics.lock_waits.inc()
            deadline = time.monotonic() + lock_ms / 1000.0
            delay = POLL_S[0]
            while token is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, POLL_S[1])
                entry = await self.cache.get(key.redis)
                if entry is not None and entry.fresh(time.time()):
                    return ReadResult.of(entry, "hit")
                if time.monotonic() > deadline:
                    ctx.fill = False  # the holder is stuck: answer, but do not race it
                    return await next_load(ctx)
                if not await self.cache.lock_held(key.redis):
                    token = await self.cache.lock_acquire(key.redis, lock_ms)
        ctx.guard = (lock_key(key.redis), token)
        try:
            if not ctx.refresh:  # double-check: the previous holder may have filled since our miss
                entry = await self.cache.get(key.redis)
                if entry is not None and entry.fresh(time.time()):
                    return ReadResult.of(entry, "hit")
            return await next_load(ctx)
        finally:
            try:
                await self.cache.lock_release(key.redis, token)
            except Exception:  # noqa: BLE001 - it expires by itself
                pass
