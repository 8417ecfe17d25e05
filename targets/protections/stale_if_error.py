"""stale-if-error: when a read fails (DB down, pool exhausted), serve the last value we know
(X-Cache: fallback). Entries stay in Redis --stale-if-error seconds past expiry for this, and each
process keeps the last value of recently read keys for when Redis is down too."""

from __future__ import annotations

from collections import OrderedDict

from cachestorm.targets.errors import CacheUnavailable
from cachestorm.targets.protections.base import Protection
from cachestorm.targets.strategies.base import ReadResult

MEMORY_KEYS = 10_000


class StaleIfError(Protection):
    name = "stale-if-error"

    def __init__(self, service):
        super().__init__(service)
        self.memory: OrderedDict[str, dict] = OrderedDict()

    def keep_extra_s(self) -> float:
        return self.settings.stale_if_error_s

    def remember(self, key, record: dict) -> None:
        self.memory[key.redis] = record
        self.memory.move_to_end(key.redis)
        if len(self.memory) > MEMORY_KEYS:
            self.memory.popitem(last=False)

    async def on_error(self, key, error):
        record = None
        try:
            entry = await self.cache.get(key.redis)
            record = entry.record if entry is not None else None
        except CacheUnavailable:
            pass
        if record is None:
            record = self.memory.get(key.redis)
        return ReadResult(record, "fallback") if record is not None else None
