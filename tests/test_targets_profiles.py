"""Profiles target in-process against real Valkey and PostgreSQL: API, no-cache, cache-aside, coalescing."""

from __future__ import annotations

import asyncio

import pytest
from cachestorm.targets.settings import TargetSettings
from cachestorm.targets.testing import in_process, metric_total


@pytest.fixture()
def settings(stack, redis_client) -> TargetSettings:
    return TargetSettings(domain="profiles", redis_url=stack.redis_url, postgres_url=stack.postgres_url,
                          rows=1000, recompute_ms=0, ttl=30)


def run(coro):
    return asyncio.run(coro)


def loads(service, key_class: str | None = None) -> float:
    from prometheus_client import generate_latest

    text = generate_latest(service.metrics.registry).decode()
    return metric_total(text, "cachestorm_recomputes_total", **({"key_class": key_class} if key_class else {}))


def test_api_shape_no_cache(settings):
    settings.strategy = "no-cache"

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            r = await client.get("/profiles/5")
            assert r.status_code == 200 and r.headers["x-cache"] == "bypass"
            assert r.headers["x-version"] == "1" and r.json()["version"] == 1
            assert r.json()["data"]["name"] == "user-5"
            w = await client.put("/profiles/5", json={"data": {"name": "new"}}, headers={"X-Request-Id": "w1"})
            assert w.status_code == 200 and w.json()["version"] == 2 and w.headers["x-version"] == "2"
            again = await client.put("/profiles/5", json={"data": {"name": "other"}}, headers={"X-Request-Id": "w1"})
            assert again.json()["version"] == 2, "a repeated X-Request-Id must not apply twice"
            r = await client.get("/profiles/5")
            assert r.json() == {"id": 5, "version": 2, "data": {"name": "new"}}
            assert (await client.get("/profiles/999999")).status_code == 404
            assert (await client.put("/profiles/5", json={"nodata": 1})).status_code == 400
            metrics = (await client.get("/metrics")).text
            assert metric_total(metrics, "cachestorm_cache_results_total", result="bypass") == 3
            assert metric_total(metrics, "cachestorm_requests_total", route="/profiles/{id:int}", status="200") >= 4

    run(scenario())


def test_cache_aside_hits_and_serves_stale_until_ttl(settings):
    settings.strategy = "cache-aside"

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            assert (await client.get("/profiles/3")).headers["x-cache"] == "miss"
            hit = await client.get("/profiles/3")
            assert hit.headers["x-cache"] == "hit" and hit.json()["version"] == 1
            await client.put("/profiles/3", json={"data": {"name": "changed"}})
            stale = await client.get("/profiles/3")
            # cache-aside with TTL only: the write does not touch the cache
            assert stale.headers["x-cache"] == "hit" and stale.json()["version"] == 1
            owner = await client.get("/profiles/3", headers={"X-User-Id": "3"})
            assert owner.headers["x-cache"] == "bypass" and owner.json()["version"] == 2
            assert loads(service, "hot") == 1

    run(scenario())


def _herd(settings, strategy: str, n: int = 50) -> tuple[float, set[str]]:
    settings.strategy = strategy
    settings.recompute_ms = 200  # long enough that all 50 misses overlap
    settings.pool_size, settings.pool_timeout = 10, 5.0  # the herd queues for connections, no 503s

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            responses = await asyncio.gather(*(client.get("/profiles/1") for _ in range(n)))
            assert all(r.status_code == 200 for r in responses)
            return loads(service), {r.headers["x-cache"] for r in responses}, service

    total, sources, service = run(scenario())
    return total, sources, service


def test_coalescing_makes_one_load_per_process(settings):
    plain, _, _ = _herd(settings, "cache-aside")
    coalesced, sources, service = _herd(settings, "cache-aside+coalescing")
    assert plain >= 20, f"without coalescing, 50 overlapping misses should mostly load: {plain}"
    assert coalesced == 1
    assert service.metrics.value("cachestorm_coalesced_waiters_total") == 49
    assert sources == {"miss"}
