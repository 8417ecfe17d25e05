"""One running target: settings, metrics, the Redis and PostgreSQL clients, the domain and strategy."""

from __future__ import annotations

from cachestorm.targets.breaker import CircuitBreaker
from cachestorm.targets.cache import Cache
from cachestorm.targets.db import Database
from cachestorm.targets.metrics import Metrics
from cachestorm.targets.settings import TargetSettings


class Service:
    def __init__(self, settings: TargetSettings):
        from cachestorm.targets.domains import load_domain
        from cachestorm.targets.strategies import build_strategy

        self.settings = settings
        self.domain = load_domain(settings.domain, self)
        self.ttl = settings.effective_ttl(self.domain.default_ttl)
        self.strategy_spec = self.domain.spec.default_strategy if settings.strategy == "default" else settings.strategy
        self.metrics = Metrics(settings.hot_keys)
        self.cache = Cache(settings.redis_url, self.metrics, settings.redis_timeout_ms,
                           CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s))
        self.db = Database(settings.postgres_url, self.metrics, settings.pool_size, settings.pool_timeout,
                           settings.recompute_ms, settings.db_capacity, settings.recompute_mode)
        self.strategy = build_strategy(self.strategy_spec, self)

    async def start(self) -> None:
        await self.db.open()
        await self.strategy.start()

    async def stop(self) -> None:
        await self.strategy.stop()
        await self.cache.close()
        await self.db.close()

    async def prefill(self, keys: int, seed: int | None = None) -> dict:
        """Warm the cache as steady state would have it: rows 1..keys, one entry each (spread
        expiries, see CachedStrategy.prefill_entry), streamed range by range with the values and
        the SETs built by PostgreSQL (targets/prefill.py). Returns {"filled": entries set, ...}."""
        from cachestorm.targets.prefill import prefill

        if getattr(self.strategy, "prefill_entry", None) is None or not self.domain.spec.prefillable:
            return {"filled": 0, "rows": 0}
        return await prefill(self, keys, seed)
