"""Each strategy's defining property, in-process against real Valkey and PostgreSQL."""

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
                          rows=200, recompute_ms=0, ttl=30, flush_interval=0)


def run(coro):
    return asyncio.run(coro)


def put(client, key_id: int, name: str):
    return client.put(f"/profiles/{key_id}", json={"data": {"name": name}})


def test_read_through_invalidates_on_write(settings):
    settings.strategy = "read-through"

    async def scenario():
        async with in_process(settings, reset=True) as (client, _):
            await client.get("/profiles/4")
            assert (await client.get("/profiles/4")).headers["x-cache"] == "hit"
            assert (await put(client, 4, "b")).json()["version"] == 2
            after = await client.get("/profiles/4")
            assert (after.headers["x-cache"], after.json()["version"]) == ("miss", 2)

    run(scenario())


def test_write_through_overwrites_cache(settings):
    settings.strategy = "write-through"

    async def scenario():
        async with in_process(settings, reset=True) as (client, _):
            await client.get("/profiles/4")
            await put(client, 4, "b")
            after = await client.get("/profiles/4")
            assert (after.headers["x-cache"], after.json()["version"], after.json()["data"]) == ("hit", 2, {"name": "b"})

    run(scenario())


def test_invalidate_on_write_new_version_unless_delete_failed(stack, settings):
    """The delete is the only thing that ends a cached value (no TTL). A Redis user that may not
    DEL makes every invalidation fail for real: the old version is then served on and on."""
    settings.strategy = "invalidate-on-write"
    admin = redis.Redis.from_url(stack.redis_url)
    admin.execute_command("ACL", "SETUSER", "nodel", "on", ">pw", "~*", "&*", "+@all", "-del", "-unlink")
    port = stack.redis_url.rsplit(":", 1)[1].split("/")[0]

    async def scenario(redis_url: str, expect_version: int, expect_source: str):
        settings.redis_url = redis_url
        async with in_process(settings, reset=True) as (client, service):
            await client.get("/profiles/8")
            write = await put(client, 8, "new")
            assert write.status_code == 200 and write.json()["version"] == 2
            after = await client.get("/profiles/8")
            assert (after.json()["version"], after.headers["x-cache"]) == (expect_version, expect_source)
            return service.metrics.value("cachestorm_cache_errors_total", {"op": "invalidate"})

    try:
        assert run(scenario(stack.redis_url, 2, "miss")) == 0
        assert redis.Redis.from_url(stack.redis_url).pttl("profiles:8") == -1, "entries have no TTL"
        errors = run(scenario(f"redis://nodel:pw@127.0.0.1:{port}/0", 1, "hit"))
        assert errors == 1, "the lost invalidation is counted, not hidden"
    finally:  # never leave the restricted user on the session's Valkey
        admin.execute_command("ACL", "DELUSER", "nodel")
        admin.close()


def test_stale_while_revalidate_serves_stale_fast_with_one_refresh(settings):
    settings.domain, settings.strategy = "catalog", "stale-while-revalidate"
    settings.ttl, settings.recompute_ms, settings.max_stale = 0.3, 1000, 30

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            assert (await client.get("/products/2")).headers["x-cache"] == "miss"
            await asyncio.sleep(0.35)  # the value's TTL passes
            started = time.perf_counter()
            stale = await asyncio.gather(*(client.get("/products/2") for _ in range(20)))
            elapsed = time.perf_counter() - started
            assert {r.headers["x-cache"] for r in stale} == {"stale"}
            # none of them waits for the refresh (1 s of recompute): a loaded box still answers well within it
            assert elapsed < 0.6, f"20 stale answers took {elapsed:.3f}s; the refresh costs 1 s"
            deadline = time.monotonic() + 5
            while service.metrics.value("cachestorm_recomputes_total", {"key_class": "hot"}) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)
            assert service.metrics.value("cachestorm_recomputes_total", {"key_class": "hot"}) == 2
            assert (await client.get("/products/2")).headers["x-cache"] == "hit"
            # writes overwrite the cache, never evict
            await client.put("/products/2", json={"data": {"name": "x"}})
            after = await client.get("/products/2")
            assert (after.headers["x-cache"], after.json()["version"]) == ("hit", 2)

    run(scenario())


def test_stale_while_revalidate_refresh_never_puts_an_older_version_back(settings):
    """The background refresh reads the row, a write commits and overwrites the cache meanwhile, then
    the refresh's fill arrives with the older version: it must not replace the write's (one truth with
    the declared bound 0)."""
    settings.domain, settings.strategy = "catalog", "stale-while-revalidate"
    settings.ttl, settings.recompute_ms, settings.max_stale = 0.3, 800, 30

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            assert service.strategy.staleness_bound_s() == 0.0
            assert (await client.get("/products/3")).json()["version"] == 1
            await asyncio.sleep(0.35)  # past the TTL: the next read is served stale and starts a refresh
            assert (await client.get("/products/3")).headers["x-cache"] == "stale"
            await asyncio.sleep(0.1)   # the refresh's SELECT has its snapshot (version 1), 0.7 s to go
            assert (await client.put("/products/3", json={"data": {"name": "new"}})).json()["version"] == 2
            deadline = time.monotonic() + 5
            while service.metrics.value("cachestorm_recomputes_total", {"key_class": "hot"}) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)  # the refresh's fill has been tried
            after = await client.get("/products/3")  # (the write's entry may be past its 0.3 s TTL: stale)
            assert after.json()["version"] == 2, after.headers["x-cache"]

    run(scenario())


def counter_in_db(url: str, key_id: int) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT (data->>'count')::bigint, version FROM counters WHERE id = %s", (key_id,)).fetchone()
    return row[0], row[1]


def test_write_behind_flush_holds_exactly_the_acknowledged_increments(settings):
    settings.domain, settings.strategy = "counters", "write-behind"

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            acked = 0
            for i in range(60):
                r = await client.post(f"/counters/{1 + i % 3}/incr", json={"by": 2}, headers={"X-Request-Id": f"r{i}"})
                assert r.status_code == 200
                acked += 2
            dup = await client.post("/counters/1/incr", json={"by": 2}, headers={"X-Request-Id": "r0"})
            assert dup.status_code == 200  # retried request: acknowledged, applied once
            assert (await client.get("/counters/1")).json()["count"] == 40
            assert counter_in_db(settings.postgres_url, 1) == (0, 1), "nothing reaches PostgreSQL before a flush"
            assert (await client.get("/counters/pending")).json()["pending"] == 3
            # the flush commits, then "times out" before Redis learns it: retried with the same id
            failed = await client.post("/counters/flush?fail=after_commit")
            assert failed.status_code == 503 and failed.json()["error"] == "db_unavailable"
            retry = (await client.post("/counters/flush")).json()
            assert retry["applied"] is False and retry["pending"] == 0
            total = sum(counter_in_db(settings.postgres_url, k)[0] for k in (1, 2, 3))
            assert total == acked == 120, "a retried flush must not double-apply"
            assert counter_in_db(settings.postgres_url, 1) == (40, 21)
            # after the flush the value gets its TTL back and reads still see it
            assert (await client.get("/counters/1")).json()["count"] == 40
            await client.post("/counters/1/incr", json={"by": 5}, headers={"X-Request-Id": "last"})
            assert (await client.post("/counters/flush")).json()["flushed"] == 1
            assert counter_in_db(settings.postgres_url, 1)[0] == 45
            assert service.metrics.value("cachestorm_write_behind_backlog") == 0

    run(scenario())


def test_write_behind_periodic_flush(settings):
    settings.domain, settings.strategy, settings.flush_interval = "counters", "write-behind", 0.1

    async def scenario():
        async with in_process(settings, reset=True) as (client, _):
            for i in range(10):
                await client.post("/counters/9/incr", json={"by": 1}, headers={"X-Request-Id": f"p{i}"})
            deadline = time.monotonic() + 5
            while counter_in_db(settings.postgres_url, 9)[0] != 10:
                assert time.monotonic() < deadline, "the periodic flush never applied the increments"
                await asyncio.sleep(0.05)

    run(scenario())


@pytest.mark.parametrize("strategy", ["no-cache", "cache-aside", "read-through", "write-through", "write-behind",
                                      "invalidate-on-write", "stale-while-revalidate"])
def test_delete_commits_in_postgres_and_each_strategy_forgets_the_key_as_it_would_a_write(stack, settings,
                                                                                           strategy):
    """--delete-ratio sends DELETE /profiles/{id}: committed in PostgreSQL, then the strategy's write path
    decides the cache: fresh-after-write strategies answer 404 at once; cache-aside serves the cached row
    until its TTL (its declared staleness bound), as it does after an update."""
    settings.strategy = strategy

    async def scenario():
        async with in_process(settings, reset=True) as (client, _):
            await client.get("/profiles/6")
            await client.get("/profiles/6")  # cached (where the strategy caches)
            if strategy == "write-behind":
                assert (await put(client, 6, "pending")).json()["version"] == 2  # unflushed when the delete comes
            deleted = await client.delete("/profiles/6", headers={"X-Request-Id": f"del-{strategy}"})
            version = 3 if strategy == "write-behind" else 2
            assert (deleted.status_code, deleted.json()["version"], deleted.headers["x-version"]) == \
                (200, version, str(version))
            again = await client.delete("/profiles/6")
            assert again.status_code == 404
            after = await client.get("/profiles/6")
            if strategy == "cache-aside":
                assert (after.status_code, after.headers["x-cache"]) == (200, "hit")  # stale within the TTL
            else:
                assert after.status_code == 404, (after.status_code, after.headers)
            assert (await put(client, 6, "gone")).status_code == 404  # no row to update
            assert (await client.delete("/products/6")).status_code in (404, 405)  # not this domain's route

    run(scenario())
    with psycopg.connect(stack.postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM profiles WHERE id = 6").fetchone()[0] == 0


def test_catalog_delete(stack, settings):
    settings.domain, settings.strategy = "catalog", "stale-while-revalidate"

    async def scenario():
        async with in_process(settings, reset=True) as (client, _):
            await client.get("/products/9")
            assert (await client.delete("/products/9")).status_code == 200
            assert (await client.get("/products/9")).status_code == 404

    run(scenario())
