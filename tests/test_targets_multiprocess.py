"""Several target processes on one Redis and PostgreSQL: cross-process stampede protection, and
write-behind surviving SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace

import httpx
import psycopg
import pytest
from cachestorm.targets.app import prepare_schema
from cachestorm.targets.process import TargetProcess
from cachestorm.targets.settings import TargetSettings
from cachestorm.targets.testing import flush_redis, metric_total, running_target, target_process


@pytest.fixture()
def settings(stack, redis_client) -> TargetSettings:
    return TargetSettings(domain="profiles", redis_url=stack.redis_url, postgres_url=stack.postgres_url,
                          rows=200, recompute_ms=300, ttl=30, pool_size=10, pool_timeout=5)


def start_three(settings: TargetSettings, tmp_path) -> list[TargetProcess]:
    targets = [target_process(replace(settings, instance_id=f"i{n}"), tmp_path / f"i{n}.log").launch()
               for n in range(3)]  # start in parallel
    try:
        return [t.wait_ready() for t in targets]
    except BaseException:  # one did not come up: stop all three, not only the test
        for target in targets:
            target.stop()
        raise


async def herd(urls: list[str], path: str, n: int = 100) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=200)) as client:
        return await asyncio.gather(*(client.get(urls[i % len(urls)] + path) for i in range(n)))


@pytest.mark.parametrize("protection", ["lock", "lease"])
def test_one_db_load_across_three_processes(settings, protection, tmp_path):
    settings.strategy = f"cache-aside+{protection}"
    targets = start_three(settings, tmp_path)
    try:
        flush_redis(settings.redis_url)
        answers = asyncio.run(herd([t.base_url for t in targets], "/profiles/1"))
        assert all(r.status_code == 200 and r.json()["id"] == 1 for r in answers)
        pages = [httpx.get(t.base_url + "/metrics").text for t in targets]
        loads = sum(metric_total(p, "cachestorm_recomputes_total") for p in pages)
        waits = sum(metric_total(p, f"cachestorm_{protection}_waits_total") for p in pages)
        assert loads == 1, f"{protection}: {loads} DB loads for 100 concurrent misses"
        assert waits >= 50
        assert sum(metric_total(p, "cachestorm_key_recomputes_total", key="1") for p in pages) == 1
    finally:
        for target in targets:
            target.stop()


def test_three_processes_without_protection_stampede(settings, tmp_path):
    settings.strategy = "cache-aside"
    targets = start_three(settings, tmp_path)
    try:
        flush_redis(settings.redis_url)
        asyncio.run(herd([t.base_url for t in targets], "/profiles/1", n=60))
        loads = sum(metric_total(httpx.get(t.base_url + "/metrics").text, "cachestorm_recomputes_total") for t in targets)
        assert loads >= 10, loads
    finally:
        for target in targets:
            target.stop()


def test_write_behind_survives_sigkill_between_flushes(stack, settings, tmp_path):
    """Acknowledged increments live in Redis until flushed: a SIGKILLed target loses none of them;
    the restarted one reports them as pending and its flush applies each exactly once."""
    counters = replace(settings, domain="counters", strategy="write-behind", recompute_ms=0, flush_interval=0)
    prepare_schema(counters, reset=True)
    first = target_process(counters, tmp_path / "first.log")
    try:
        first.start()
        with httpx.Client(base_url=first.base_url) as client:
            for i in range(30):
                assert client.post(f"/counters/{20 + i % 2}/incr", json={"by": 1},
                                   headers={"X-Request-Id": f"k{i}"}).status_code == 200
    finally:
        if first.process is not None and first.process.poll() is None:
            os.kill(first.pid, signal.SIGKILL)
            first.process.wait(timeout=10)
    assert first.process.returncode == -signal.SIGKILL
    with running_target(replace(counters, port=8000)) as second, httpx.Client(base_url=second.base_url) as client:
        assert client.get("/counters/pending").json()["pending"] == 2
        assert client.post("/counters/flush").json()["flushed"] == 2
        assert client.get("/counters/20").json()["count"] == 15
    with psycopg.connect(settings.postgres_url) as conn:
        rows = conn.execute("SELECT id, (data->>'count')::int FROM counters WHERE id IN (20, 21) ORDER BY id").fetchall()
    assert rows == [(20, 15), (21, 15)]
