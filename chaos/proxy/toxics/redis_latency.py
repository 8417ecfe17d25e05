"""redis_latency (cachestorm extra): matching commands reach the server `latency` ms ± `jitter` ms late.

E.g. slow SETs and fast GETs (`commands: ["SET"]`), or only the hot keys slow (`keys: ["hot:*"]`).
A held command holds the commands behind it on that connection, as a slow command does in Redis.
"""

from __future__ import annotations

import random

from cachestorm.chaos.proxy.toxics.redis_command import RedisCommandToxic


class RedisLatencyToxic(RedisCommandToxic):
    type_name = "redis_latency"
    go_struct = "RedisLatencyToxic"
    fields = {"latency": (int, 0), "jitter": (int, 0), **RedisCommandToxic.fields}

    async def process(self, link, state, data, emit):
        ready = []
        for name, command in self.split(state, data):
            if self.hit(link, name, command):
                if ready:
                    await emit(b"".join(ready))
                    ready = []
                delay_ms = self.attrs["latency"]
                jitter = self.attrs["jitter"]
                if jitter:
                    delay_ms = max(0, delay_ms + random.randint(-jitter, jitter))
                await link.sleep_until(link.now() + delay_ms / 1000.0, self)
            ready.append(command)
        if ready:
            await emit(b"".join(ready))
