"""The database that saturates (--db-capacity slots, cpu mode) and the bulk prefill, against real
Valkey and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time

import psycopg
import pytest
from cachestorm.targets.settings import TargetSettings
from cachestorm.targets.testing import in_process


@pytest.fixture()
def settings(stack, redis_client) -> TargetSettings:
    return TargetSettings(domain="profiles", strategy="cache-aside", redis_url=stack.redis_url,
                          postgres_url=stack.postgres_url, rows=3000, recompute_ms=0, ttl=60, pool_size=10)


def run(coro):
    return asyncio.run(coro)


def db_reads(service) -> float:
    return sum(service.metrics.value("cachestorm_db_queries_total", {"kind": "read", "key_class": c})
               for c in ("hot", "rest"))


def test_prefill_is_one_query_and_pipelined_sets_whatever_the_recompute(settings, redis_client):
    settings.recompute_ms = 2000  # through the read path, 3000 keys would take minutes

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            started = time.monotonic()
            answer = await client.post("/prefill", json={"keys": 3000, "seed": 1})
            elapsed = time.monotonic() - started
            hit = await client.get("/profiles/1234")
            return answer, elapsed, db_reads(service), hit

    answer, elapsed, reads, hit = run(scenario())
    assert answer.status_code == 200 and answer.json()["filled"] == 3000
    assert elapsed < 15, f"prefill of 3000 keys took {elapsed:.1f} s"
    assert reads == 0  # no recompute was paid
    assert hit.headers["x-cache"] == "hit" and hit.json()["id"] == 1234


def test_prefilled_expiries_are_spread_over_the_ttl(settings, redis_client):
    """A cache in steady state has entries of every age: remaining lifetimes uniform over the TTL,
    not one synchronized wave one TTL after the warm-up."""
    async def scenario():
        async with in_process(settings, reset=True) as (client, _):
            assert (await client.post("/prefill", json={"keys": 2000, "seed": 7})).status_code == 200

    run(scenario())
    pipe = redis_client.pipeline(transaction=False)
    for key_id in range(1, 2001):
        pipe.get(f"profiles:{key_id}")
    pipe.pttl("profiles:2")
    *values, physical_ms = pipe.execute()
    now = time.time()
    # None: its random age was the whole TTL
    remaining = [0.0 if raw is None else json.loads(raw)["x"] - now for raw in values]
    ttl = settings.ttl
    assert all(-1 < r <= ttl + 1 for r in remaining)
    quarters = [sum(1 for r in remaining if q * ttl / 4 <= r < (q + 1) * ttl / 4) for q in range(4)]
    assert all(350 <= n <= 650 for n in quarters), quarters  # ~500 each: uniform, not one wave
    assert abs(physical_ms / 1000.0 - remaining[1]) < 2  # Redis drops it when the strategy would: no hidden long tail


def test_prefill_refuses_a_bad_body(settings):
    async def scenario():
        async with in_process(settings, reset=True) as (client, _):
            return await client.post("/prefill", json={"keys": "all"})

    answer = run(scenario())
    assert answer.status_code == 400 and answer.json()["error"] == "bad_request"


def lock_waiters(postgres_url: str) -> int:
    """Target queries waiting for a DB slot (an advisory lock) right now."""
    with psycopg.connect(postgres_url) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                            "AND wait_event = 'advisory' AND query LIKE '%cachestorm_recompute(%'").fetchone()[0]


def concurrent_misses(settings: TargetSettings, n: int) -> tuple[float, int]:
    """n misses on n distinct keys at once: (wall seconds, most queries seen waiting for a slot)."""
    async def scenario():
        async with in_process(settings, reset=True) as (client, _):
            seen = 0

            async def watch():
                nonlocal seen
                while True:
                    seen = max(seen, await asyncio.to_thread(lock_waiters, settings.postgres_url))
                    await asyncio.sleep(0.02)

            watcher = asyncio.create_task(watch())
            started = time.monotonic()
            answers = await asyncio.gather(*(client.get(f"/profiles/{k}") for k in range(100, 100 + n)))
            elapsed = time.monotonic() - started
            watcher.cancel()
            assert all(a.status_code == 200 for a in answers)
            return elapsed, seen

    return run(scenario())


def test_db_capacity_queues_recomputes_inside_postgres(settings):
    settings.recompute_ms, settings.db_capacity = 300, 2
    elapsed, waiting = concurrent_misses(settings, 6)
    assert elapsed >= 0.85, f"6 recomputes of 300 ms on 2 slots took {elapsed:.2f} s (>= 0.9 s expected)"
    assert waiting >= 2  # the queue is in PostgreSQL, each waiter holding its connection

    settings.db_capacity = 0  # unlimited: they overlap
    elapsed, waiting = concurrent_misses(settings, 6)
    assert elapsed < 0.85 and waiting == 0


def test_cpu_mode_burns_in_postgres(settings):
    settings.recompute_ms, settings.recompute_mode = 150, "cpu"

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            started = time.monotonic()
            answer = await client.get("/profiles/42")
            return answer, time.monotonic() - started, service.db.recompute_loops

    answer, elapsed, loops = run(scenario())
    assert answer.status_code == 200 and loops > 0
    assert elapsed >= 0.07, f"a 150 ms CPU recompute took {elapsed * 1000:.0f} ms"


@pytest.mark.parametrize("argv, message", [
    (["--db-capacity", "-1"], "--db-capacity"),
    (["--recompute-mode", "gpu"], "--recompute-mode"),
])
def test_bad_db_settings_are_one_line(argv, message):
    from cachestorm.targets.settings import parse_settings

    from cachestorm.core.errors import CachestormError

    with pytest.raises(CachestormError, match=message):
        parse_settings(argv)


def test_db_query_latency_is_exported_with_buckets(settings):
    settings.recompute_ms = 20

    async def scenario():
        async with in_process(settings, reset=True) as (client, _):
            await client.get("/profiles/7")
            return (await client.get("/metrics")).text

    text = run(scenario())
    from cachestorm.reports.incident import bucket_quantile
    from cachestorm.reports.metrics import CounterSeries

    from cachestorm.scrape import parse_prometheus

    samples = parse_prometheus(text)  # as the scraper keeps them: the buckets of this histogram stay
    assert samples['cachestorm_db_query_seconds_bucket{le="+Inf"}'] == 1.0
    series = CounterSeries.from_metrics([{"t": 0.0, "instance": "a", "metrics": {}},
                                         {"t": 1.0, "instance": "a", "metrics": samples}])
    assert 18 <= bucket_quantile(series, 0, 1, 0.5) <= 40  # a 20 ms recompute, within a bucket's 20%


def test_a_read_refused_at_the_pool_is_an_attempt_not_a_query(settings, stack):
    """8 concurrent misses of 400 ms on a pool of 2 with a 100 ms acquire timeout: 2 get a connection
    and run, 6 are refused at the pool. The targets count 8 attempts and 2 queries, and PostgreSQL's
    own count of the read statement (what the scraper reads as `read_calls`) grows by the 2 that ran."""
    from cachestorm.scrape import PG_STATS_SQL

    settings.recompute_ms, settings.pool_size, settings.pool_timeout = 400, 2, 0.1

    def pg_reads() -> int:
        with psycopg.connect(stack.postgres_url, autocommit=True) as conn:
            row = conn.execute(PG_STATS_SQL).fetchone()
            return int(row[6])  # read_calls: the column after exec_ms

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            before = pg_reads()
            answers = await asyncio.gather(*(client.get(f"/profiles/{k}") for k in range(200, 208)))
            attempts = sum(service.metrics.value("cachestorm_db_attempts_total", {"kind": "read", "key_class": c})
                           for c in ("hot", "rest"))
            timeouts = service.metrics.value("cachestorm_pool_timeouts_total")
            return [a.status_code for a in answers], attempts, db_reads(service), timeouts, pg_reads() - before

    statuses, attempts, queries, timeouts, pg = run(scenario())
    assert sorted(statuses) == [200, 200] + [503] * 6, statuses
    assert timeouts == 6
    assert attempts == 8 and queries == 2
    assert pg == queries  # PostgreSQL ran exactly the queries the targets counted
# Rows PostgreSQL cannot print exactly as Python's json.dumps (each must come back by id and be
# written by Python), and rows it can, tricky ones included.
TRICKY_ROWS = {
    11: ({"name": "Zoë", "bio": "non-ASCII"}, True),
    12: ('{"price": 1.50, "n": 1e5}', True),  # PostgreSQL prints 1.50 and 100000, Python 1.5 and 100000.0
    13: ({"name": "key: value, more", "bio": "separators inside a string"}, True),
    14: ({"nested": {"a": [1, 2, {"b": True}], "c": None}, "n": -3}, False),
    15: ({"quote": 'say "hi" \\ back', "tab": "a\tb\nc", "ctl": "\x01"}, False),
    16: ({}, False),
    17: ({"big": 12345678901234567890, "e": "1e5 is a string"}, True),  # a digit then e: decided conservatively
    18: ({"big": 12345678901234567890, "word": "exact"}, False),
}


@pytest.mark.parametrize("strategy", ["cache-aside", "cache-aside+jitter", "invalidate-on-write"])
def test_prefill_built_by_postgresql_is_byte_for_byte_what_python_writes(settings, redis_client, strategy):
    """Every value PostgreSQL builds equals Entry.encode of the row as psycopg reads it; the rows it
    cannot print exactly are written by Python; expiries stay within the strategy's TTL range."""
    settings.strategy, settings.jitter = strategy, 0.5

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            with psycopg.connect(settings.postgres_url, autocommit=True) as conn:
                for key_id, (data, _) in TRICKY_ROWS.items():
                    conn.execute("UPDATE profiles SET data = %s::jsonb, version = 3 WHERE id = %s",
                                 (data if isinstance(data, str) else json.dumps(data), key_id))
            answer = await client.post("/prefill", json={"keys": 3000, "seed": 5})
            return answer.json(), service.strategy.expires

    done, expires = run(scenario())
    assert "filled" in done, done
    assert done["filled"] == 3000 and done["built_by"] == "postgresql"
    check_prefilled_values(settings, redis_client, expires, high=settings.ttl * (1.5 if "jitter" in strategy else 1))
    assert done["rows_built_by_python"] == sum(1 for _, python in TRICKY_ROWS.values() if python)


def check_prefilled_values(settings, redis_client, expires: bool, high: float) -> None:
    from cachestorm.targets.cache import Entry
    from psycopg.rows import dict_row

    with psycopg.connect(settings.postgres_url, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT id, version, data FROM profiles WHERE id <= 3000 ORDER BY id").fetchall()
    pipe = redis_client.pipeline(transaction=False)
    for row in rows:
        pipe.get(f"profiles:{row['id']}")
        pipe.pttl(f"profiles:{row['id']}")
    replies = pipe.execute()
    now = time.time()
    checked = 0
    for row, raw, pttl in zip(rows, replies[::2], replies[1::2], strict=True):
        if raw is None:  # its random age was its whole TTL
            continue
        entry = Entry.decode(raw)
        assert raw.decode() == Entry(row, entry.expires_at, entry.delta).encode(), row["id"]
        if expires:
            remaining = entry.expires_at - now
            assert -1 < remaining <= high + 1 and abs(pttl / 1000.0 - remaining) < 2, (row["id"], remaining, pttl)
        else:
            assert entry.expires_at == 0 and pttl == -1
        checked += 1
    assert checked > 2900 and all(f"profiles:{key_id}" for key_id in TRICKY_ROWS)


def test_prefill_of_a_ttl_sql_cannot_draw_is_python_range_by_range(settings, redis_client, monkeypatch):
    """A protection with a fill_ttl of its own and no fill_ttl_range: every row is written by Python,
    still in bounded ranges."""
    from cachestorm.targets import prefill
    from cachestorm.targets.protections.base import Protection
    from cachestorm.targets.protections.jitter import Jitter

    monkeypatch.setattr(Jitter, "fill_ttl_range", Protection.fill_ttl_range)
    monkeypatch.setattr(prefill, "CHUNK", 700)
    settings.strategy = "cache-aside+jitter"

    async def scenario():
        async with in_process(settings, reset=True) as (client, service):
            answer = await client.post("/prefill", json={"keys": 3000, "seed": 5})
            return answer.json(), service.metrics.value("cachestorm_db_queries_total", {"kind": "prefill", "key_class": "rest"})

    done, queries = run(scenario())
    assert done["filled"] == 3000 and done["built_by"] == "python"
    assert queries == 5  # 3000 rows in ranges of 700
    check_prefilled_values(settings, redis_client, True, high=settings.ttl * 1.1)
