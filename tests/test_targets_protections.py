"""Each protection's defining property, in-process against real Valkey and PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
import redis
from cachestorm.targets.settings import TargetSettings
from cachestorm.targets.testing import in_process


@pytest.fixture()
def settings(stack, redis_client) -> TargetSettings:
    return TargetSettings(domain="profiles", redis_url=stack.redis_url, postgres_url=stack.postgres_url,
                          rows=200, recompute_ms=0, ttl=30)


def run(coro):
    return asyncio.run(coro)


def db_reads(service) -> float:
    return sum(service.metrics.value("cachestorm_db_queries_total", {"kind": "read", "key_class": c})
               for c in ("hot", "rest"))


def test_negative_caching_answers_404_from_cache(settings):
    async def scenario(strategy: str):
        settings.strategy = strategy
        async with in_process(settings, reset=True) as (client, service):
            answers = [await client.get("/profiles/5000") for _ in range(5)]
            assert all(r.status_code == 404 for r in answers)
            return [r.headers["x-cache"] for r in answers], db_reads(service)

    sources, reads = run(scenario("cache-aside+negative"))
    assert sources == ["miss"] + ["negative"] * 4 and reads == 1
    sources, reads = run(scenario("cache-aside"))
    assert sources == ["miss"] * 5 and reads == 5


def slow_read_running(postgres_url: str) -> bool:
    """Is a target's read query (the one with the recompute) executing in PostgreSQL right now?"""
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                           "AND query LIKE '%cachestorm_recompute(%' AND pid <> pg_backend_pid()").fetchone()
    return row[0] > 0


async def wait_for_slow_read(postgres_url: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(slow_read_running, postgres_url):
        assert time.monotonic() < deadline, "the slow read never reached PostgreSQL"
        await asyncio.sleep(0.005)


def test_lease_refuses_a_late_fill(settings):
    """A fill reads v1 (slow recompute), a write commits v2 and invalidates, then the fill lands.
    Without a lease the old value is installed (set after invalidate); with one it is refused."""
    settings.recompute_ms = 600  # the write below must land while the read's query still runs

    async def scenario(strategy: str):
        settings.strategy = strategy
        async with in_process(settings, reset=True) as (client, service):
            slow_read = asyncio.create_task(client.get("/profiles/6"))
            await wait_for_slow_read(settings.postgres_url)  # its lease (if any) is taken, v1 being read
            assert (await client.put("/profiles/6", json={"data": {"n": 2}})).json()["version"] == 2
            assert (await slow_read).json()["version"] == 1
            after = await client.get("/profiles/6")
            return after.json()["version"], after.headers["x-cache"], service.metrics.value(
                "cachestorm_lease_refused_total")

    assert run(scenario("read-through")) == (1, "hit", 0), "plain fill installs the stale value"
    assert run(scenario("read-through+lease")) == (2, "miss", 1)


def test_xfetch_refreshes_before_expiry(settings):
    """delta = 0.3 s, TTL 1 s: XFetch recomputes before the value expires; cache-aside never does.

    A miss *answered* before (time before the fill) + TTL cannot be an expiry miss, however loaded the
    machine is. beta = 3 makes the early refresh (delta * beta * Exp(1) before expiry) almost always
    start more than one recompute ahead of the expiry; with beta = 1 it often starts too late for its
    answer to come back in time (a flaky test), which would prove nothing about XFetch."""
    settings.recompute_ms, settings.ttl, settings.xfetch_beta = 300, 1.0, 3.0

    async def scenario(strategy: str):
        settings.strategy = strategy
        async with in_process(settings, reset=True) as (client, service):
            before_fill = time.time()
            await client.get("/profiles/3")
            while time.time() < before_fill + settings.ttl:
                r = await client.get("/profiles/3")
                if r.headers["x-cache"] == "miss":
                    return time.time() - before_fill
                await asyncio.sleep(0.01)
            return None

    late = run(scenario("cache-aside"))
    assert late is None or late >= 1.0, f"cache-aside recomputed {late:.3f} s after the fill, before its TTL"
    early = run(scenario("cache-aside+xfetch"))
    assert early is not None and early < 1.0, early


def test_jitter_spreads_ttls(stack, settings):
    settings.strategy, settings.ttl, settings.jitter = "cache-aside+jitter", 100, 0.1

    async def scenario():
        async with in_process(settings, reset=True) as (client, _):
            for key_id in range(1, 41):
                await client.get(f"/profiles/{key_id}")

    run(scenario())
    direct = redis.Redis.from_url(stack.redis_url)
    ttls = [direct.pttl(f"profiles:{k}") / 1000 for k in range(1, 41)]
    assert all(89 <= t <= 110.1 for t in ttls), ttls
    assert max(ttls) - min(ttls) > 8, "±10% jitter should spread 40 TTLs by more than 8 s of 100"


def test_stale_if_error_serves_fallback_when_db_is_unreachable(stack, settings, proxy_client):
    settings.postgres_url = stack.postgres_proxy_url
    settings.ttl, settings.pool_timeout = 0.2, 0.5

    async def scenario(strategy: str):
        settings.strategy = strategy
        async with in_process(settings, reset=True) as (client, _):
            assert (await client.get("/profiles/11")).status_code == 200
            await asyncio.sleep(0.25)  # expired: the next read needs PostgreSQL
            proxy_client.update_proxy("postgres", enabled=False)
            try:
                started = time.perf_counter()
                r = await client.get("/profiles/11")
                return r.status_code, r.headers.get("x-cache"), r.json(), time.perf_counter() - started
            finally:
                proxy_client.update_proxy("postgres", enabled=True)

    status, source, body, elapsed = run(scenario("cache-aside+stale-if-error"))
    assert (status, source, body["version"]) == (200, "fallback", 1)
    status, _, body, elapsed = run(scenario("cache-aside"))
    assert status == 503 and body["error"] in ("db_unavailable", "pool_timeout") and elapsed < 3


def test_lock_refuses_the_fill_of_a_holder_that_outlived_its_lock(stack, settings):
    """Fencing: the holder's lock expires during its slow recompute and another holder takes it; the
    late fill must be refused (the newer holder's value stands), not installed over it."""
    settings.strategy, settings.recompute_ms, settings.lock_ms = "cache-aside+lock", 700, 150
    direct = redis.Redis.from_url(stack.redis_url)

    async def scenario():
        async with in_process(settings, reset=True) as (client, _):
            slow = asyncio.create_task(client.get("/profiles/8"))
            await wait_for_slow_read(settings.postgres_url)  # the holder has the lock and is reading
            await asyncio.sleep(0.3)  # its 150 ms lock is gone
            assert direct.set("profiles:8:lock", "newer-holder", nx=True, px=5000)
            answer = await slow
            return answer.status_code, direct.get("profiles:8")

    status, cached = run(scenario())
    assert status == 200  # the stale holder still answers its reader
    assert cached is None, "the fill of a holder whose lock had expired was installed"


@pytest.mark.parametrize("beta", [0.5, 2.0, 6.0])
def test_xfetch_beta_sets_how_early_refreshes_start(beta):
    """P(refresh at time-to-expiry T) = exp(-T / (delta * beta)) (Vattani et al.): with delta = 1 s and
    T = 2 s that is 1.8% at beta 0.5, 37% at 2, 72% at 6. A beta left out of the formula makes the
    three equal."""
    import math
    import random
    from types import SimpleNamespace

    from cachestorm.targets.cache import Entry
    from cachestorm.targets.protections.xfetch import XFetch

    xfetch = XFetch(SimpleNamespace(settings=SimpleNamespace(xfetch_beta=beta), metrics=None, cache=None))
    now = 1_000.0
    entry = Entry({"id": 1, "version": 1, "data": {}}, expires_at=now + 2.0, delta=1.0)
    random.seed(11)
    draws = 4000
    share = sum(xfetch.refresh_early(entry, now) for _ in range(draws)) / draws
    expected = math.exp(-2.0 / (1.0 * beta))
    assert abs(share - expected) < 0.03, (beta, share, expected)


def test_stale_if_error_serves_from_memory_when_redis_and_db_are_down(stack, settings, proxy_client):
    """Redis and PostgreSQL both unreachable: the value this process read last is the fallback."""
    settings.redis_url, settings.postgres_url = stack.redis_proxy_url, stack.postgres_proxy_url
    settings.strategy, settings.pool_timeout = "cache-aside+stale-if-error", 0.5

    async def scenario():
        async with in_process(settings, reset=True) as (client, _):
            assert (await client.get("/profiles/12")).status_code == 200
            proxy_client.update_proxy("redis", enabled=False)
            proxy_client.update_proxy("postgres", enabled=False)
            try:
                r = await client.get("/profiles/12")
                missing = await client.get("/profiles/13")  # never read: nothing to fall back on
                return r.status_code, r.headers.get("x-cache"), r.json(), missing.status_code
            finally:
                proxy_client.update_proxy("redis", enabled=True)
                proxy_client.update_proxy("postgres", enabled=True)

    status, source, body, missing = run(scenario())
    assert (status, source, body["id"], body["version"]) == (200, "fallback", 12, 1)
    assert missing == 503
