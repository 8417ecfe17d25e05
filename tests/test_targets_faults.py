"""Degradation: a dead Redis (circuit breaker), an exhausted pool, and the permissions revoke bound."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from cachestorm.targets.settings import TargetSettings
from cachestorm.targets.testing import in_process


@pytest.fixture()
def settings(stack, redis_client) -> TargetSettings:
    return TargetSettings(domain="profiles", redis_url=stack.redis_url, postgres_url=stack.postgres_url,
                          rows=200, recompute_ms=0, ttl=30)


def run(coro):
    return asyncio.run(coro)


def test_reads_answer_from_db_when_redis_hangs(settings):
    """A 'Redis' that accepts connections and never answers: each read costs at most one timeout
    until the breaker opens; then reads skip Redis and answer at DB speed."""
    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(100)
        settings.redis_url = f"redis://127.0.0.1:{blackhole.getsockname()[1]}/0"
        settings.strategy, settings.redis_timeout_ms = "cache-aside", 100
        settings.breaker_failures, settings.breaker_cooldown_s = 3, 30

        async def scenario():
            async with in_process(settings, reset=False) as (client, service):
                timings = []
                for _ in range(8):
                    started = time.perf_counter()
                    r = await client.get("/profiles/2")
                    timings.append(time.perf_counter() - started)
                    assert r.status_code == 200 and r.headers["x-cache"] == "bypass" and r.json()["id"] == 2
                assert max(timings) < 0.5, timings
                # breaker open: no read waits for a Redis timeout (100 ms) any more
                assert max(timings[4:]) < 0.1, f"breaker open: no Redis timeouts any more {timings}"
                assert service.cache.breaker.is_open
                return service.metrics.value("cachestorm_cache_errors_total", {"op": "get"})

        assert run(scenario()) == 8


def test_pool_exhaustion_is_503_pool_timeout(settings):
    settings.strategy, settings.recompute_ms = "no-cache", 600
    settings.pool_size, settings.pool_timeout = 1, 0.2

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            answers = await asyncio.gather(*(client.get(f"/profiles/{k}") for k in range(1, 6)))
            statuses = sorted(r.status_code for r in answers)
            assert statuses == [200, 503, 503, 503, 503]
            assert all(r.json()["error"] == "pool_timeout" for r in answers if r.status_code == 503)
            assert service.metrics.value("cachestorm_pool_timeouts_total") == 4
            assert service.metrics.value("cachestorm_pool_waits_total") >= 4

    run(scenario())


def test_lookups_that_fail_count_against_the_hit_ratio(settings):
    """Misses that end in a pool timeout are lookups the cache did not serve: left uncounted, an
    incident's failing misses would lift its hit ratio (the unprotected run showed ~0.9 while 30 % failed)."""
    from cachestorm.core.hitratio import hit_ratio

    settings.strategy, settings.recompute_ms = "cache-aside", 600
    settings.pool_size, settings.pool_timeout = 1, 0.2

    def results(service) -> dict[str, float]:
        return {name: service.metrics.value("cachestorm_cache_results_total", {"result": name, "key_class": "hot"})
                for name in ("hit", "miss", "failed")}

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            answers = await asyncio.gather(*(client.get(f"/profiles/{k}") for k in range(1, 6)))
            assert sorted(r.status_code for r in answers) == [200, 503, 503, 503, 503]
            assert (await client.get("/profiles/1")).headers["x-cache"] in ("hit", "miss")  # the filled one
            return results(service)

    counts = run(scenario())
    assert counts["failed"] == 4, counts
    assert hit_ratio(counts) <= 2 / 6, counts


def test_permission_grants_after_revoke_bound_are_violations(settings):
    settings.domain, settings.ttl, settings.revoke_bound = "permissions", 5, 0.3

    async def scenario(strategy: str):
        settings.strategy = strategy
        async with in_process(settings, reset=True) as (client, service):
            assert (await client.get("/permissions/4/write")).json()["granted"] is True
            revoke = await client.put("/permissions/4/write", json={"granted": False})
            assert revoke.json() == {"user": 4, "perm": "write", "granted": False, "version": 2}
            await asyncio.sleep(0.35)  # past the stated bound
            check = await client.get("/permissions/4/write")
            report = (await client.get("/permissions/violations")).json()
            return check.json()["granted"], report, service.metrics.value("cachestorm_permission_violations_total")

    granted, report, metric = run(scenario("cache-aside"))  # no invalidation: granted from cache until TTL
    assert granted is True and report["violations"] == 1 and metric == 1 and report["bound_s"] == 0.3
    granted, report, metric = run(scenario("read-through"))  # explicit invalidation
    assert granted is False and report["violations"] == 0 and metric == 0
