"""A protection plugs into the shared read path (targets/strategies/base.py) at any of these points.
Override only what you need; the read path calls a hook only if some protection overrides it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cachestorm.targets.cache import Entry
    from cachestorm.targets.errors import TargetError
    from cachestorm.targets.strategies.base import Key, LoadContext, ReadResult

NextLoad = Callable[["LoadContext"], Awaitable["ReadResult"]]


class Protection:
    name = ""
    order = 50                 # place in the load chain: smaller runs outside (first)
    caches_absence = False     # negative caching
    absence_ttl = 0.0

    def __init__(self, service):
        self.service = service
        self.settings = service.settings
        self.metrics = service.metrics
        self.cache = service.cache

    def fill_ttl(self, ttl: float) -> float:
        return ttl

    def fill_ttl_range(self, low: float, high: float) -> tuple[float, float] | None:
        """Where fill_ttl takes TTLs drawn uniformly from [low, high], as a uniform range again: the
        bulk prefill draws each key's TTL inside PostgreSQL from it (targets/prefill.py). None: a
        fill_ttl this cannot describe; the prefill then calls fill_ttl per key."""
        return (low, high) if type(self).fill_ttl is Protection.fill_ttl else None

    def keep_extra_s(self) -> float:
        """Seconds an entry stays in Redis past its logical expiry."""
        return 0.0

    def refresh_early(self, entry: Entry, now: float) -> bool:
        return False

    async def around_load(self, key: Key, next_load: NextLoad, ctx: LoadContext) -> ReadResult:
        return await next_load(ctx)

    async def on_error(self, key: Key, error: TargetError) -> ReadResult | None:
        return None

    def remember(self, key: Key, record: dict) -> None:
        pass
