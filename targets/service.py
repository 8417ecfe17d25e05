"""One running target: settings, metrics, the Redis and PostgreSQL clients, the domain and strategy."""

from __future__ import annotations

from targets.breaker import CircuitBreaker
from targets.cache import Cache
from targets.db import Database
from targets.metrics import Metrics
from targets.settings import TargetSettings


class Service:
    def __init__(self, settings: TargetSettings):
        from targets.domains import load_domain
        from targets.strategies import build_strategy

        self.settings = settings
        self.domain = load_domain(settings.domain, self)
        self.ttl = settings.effective_ttl(self.domain.default_ttl)
        self.strategy_spec = self.domain.default_strategy if settings.strategy == "default" else settings.strategy
        self.metrics = Metrics(settings.hot_keys)
        self.cache = Cache(settings.redis_url, self.metrics, settings.redis_timeout_ms,
                           CircuitBreaker(settings.breaker_failures, settings.breaker_cooldown_s))
        self.db = Database(settings.postgres_url, self.metrics, settings.pool_size, settings.pool_timeout,
                           settings.recompute_ms)
        self.strategy = build_strategy(self.strategy_spec, self)

    async def start(self) -> None:
        await self.db.open()
        await self.strategy.start()

    async def stop(self) -> None:
        await self.strategy.stop()
        await self.cache.close()
        await self.db.close()
