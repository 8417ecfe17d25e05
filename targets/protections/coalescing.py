"""coalescing: singleflight per process. Concurrent misses on one key share one load; N processes
still make N loads, and a slow leader holds up all its waiters."""

from __future__ import annotations

import asyncio

from cachestorm.targets.protections.base import NextLoad, Protection


class Coalescing(Protection):
    name = "coalescing"
    order = 10  # outermost: waiters in this process never reach the lock/lease round trips

    def __init__(self, service):
        super().__init__(service)
        self.flights: dict[str, asyncio.Future] = {}

    async def around_load(self, key, next_load: NextLoad, ctx):
        flight = self.flights.get(key.redis)
        if flight is not None:
            self.metrics.coalesced_waiters.inc()
            return await asyncio.shield(flight)
        flight = self.flights[key.redis] = asyncio.get_running_loop().create_future()
        try:
            result = await next_load(ctx)
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # mark retrieved: waiters may be none
            raise
        else:
            flight.set_result(result)
            return result
        finally:
            del self.flights[key.redis]
