"""Proxy faults (partition, latency, failed writes, database trouble) through the real chaos proxy."""

from __future__ import annotations

import time

import psycopg
import pytest
import redis
from cachestorm.chaos.faults import make_fault

from cachestorm.stack import context_from_stack


@pytest.fixture()
def ctx(stack, tmp_path, proxy_client):
    return context_from_stack(stack, ledger_path=str(tmp_path / "ledger.jsonl"))


def proxied(stack, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_proxy_url, socket_timeout=timeout, socket_connect_timeout=timeout)


def assert_clean(proxy_client) -> None:
    for name, proxy in proxy_client.proxies().items():
        assert proxy["enabled"], name
        assert proxy["toxics"] == [], name


def test_redis_down_refuses_connections_and_revert_restores(ctx, stack, proxy_client, redis_client):
    fault = make_fault("redis-down").bind(ctx, window_s=5)
    try:
        fault.apply()
        with pytest.raises(redis.exceptions.ConnectionError, match="refused|Connection"):
            proxied(stack).ping()
    finally:
        fault.revert()
    fault.revert()
    assert proxied(stack).ping()
    assert_clean(proxy_client)


def test_blackhole_makes_the_client_time_out(ctx, stack, proxy_client, redis_client):
    fault = make_fault("redis-blackhole").bind(ctx, window_s=5)
    try:
        fault.apply()
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            proxied(stack, timeout=0.3).ping()
        assert time.monotonic() - started >= 0.25
        assert redis_client.get("blackholed") is None
    finally:
        fault.revert()
    assert proxied(stack).ping()
    assert_clean(proxy_client)


def test_reset_peer_breaks_connections(ctx, stack, proxy_client, redis_client):
    fault = make_fault("redis-reset").bind(ctx, window_s=5)
    try:
        fault.apply()
        with pytest.raises(redis.exceptions.ConnectionError):
            proxied(stack).ping()
    finally:
        fault.revert()
    assert proxied(stack).ping()


def test_latency_delays_and_hands_its_removal_to_the_proxy(ctx, stack, proxy_client, redis_client):
    client = proxied(stack)
    client.ping()
    fault = make_fault("redis-latency", {"latency_ms": 150}).bind(ctx, window_s=5)
    try:
        fault.apply()
        toxics = proxy_client.toxics("redis")
        assert [t["attributes"]["latency"] for t in toxics] == [150]
        pending = {e["id"]: e for e in proxy_client.expiries()["pending"]}   # our proxy removes it if we die
        entry = pending[fault.state["expiry_id"]]
        assert entry["actions"] == [{"do": "remove-toxic", "proxy": "redis", "toxic": toxics[0]["name"]}]
        assert 3 < entry["due_at"] - time.time() <= 5.5   # window + grace, less however long this took
        started = time.monotonic()
        client.ping()
        assert time.monotonic() - started >= 0.14
    finally:
        fault.revert()
    assert_clean(proxy_client)
    assert fault.state["expiry_id"] not in {e["id"] for e in proxy_client.expiries()["pending"]}


def test_proxy_side_duration_removes_the_toxic_without_us(ctx, proxy_client):
    fault = make_fault("redis-bandwidth", {"rate_kbps": 1}).bind(ctx, window_s=0.2)
    fault.apply()   # and never reverted: the controller "died"
    assert len(proxy_client.toxics("redis")) == 1
    deadline = time.monotonic() + 5
    while proxy_client.toxics("redis") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy_client.toxics("redis") == []


def test_write_fail_fails_sets_while_gets_work(ctx, stack, proxy_client, redis_client):
    redis_client.set("profiles:1", "x")
    fault = make_fault("redis-write-fail", {"rate": 1.0}).bind(ctx, window_s=5)
    client = proxied(stack)
    try:
        fault.apply()
        with pytest.raises(redis.exceptions.ResponseError, match="write failed"):
            client.set("profiles:2", "y")
        assert client.get("profiles:1") == b"x"
    finally:
        fault.revert()
    assert client.set("profiles:2", "y") and redis_client.get("profiles:2") == b"y"


def test_cache_delete_fail_loses_only_invalidations(ctx, stack, proxy_client, redis_client):
    fault = make_fault("cache-delete-fail").bind(ctx, window_s=5)
    client = proxied(stack)
    try:
        fault.apply()
        assert client.set("profiles:3", "v1")
        with pytest.raises(redis.exceptions.ResponseError):
            client.delete("profiles:3")
        assert redis_client.get("profiles:3") == b"v1"   # the stale value survives
    finally:
        fault.revert()
    assert client.delete("profiles:3") == 1


def test_db_down_and_db_latency(ctx, stack, proxy_client):
    down = make_fault("db-down").bind(ctx, window_s=5)
    try:
        down.apply()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(stack.postgres_proxy_url, connect_timeout=2)
    finally:
        down.revert()
    slow = make_fault("db-slow-recompute", {"latency_ms": 100}).bind(ctx, window_s=5)
    with psycopg.connect(stack.postgres_proxy_url, connect_timeout=5) as conn:
        conn.execute("SELECT 1")
        try:
            slow.apply()
            started = time.monotonic()
            conn.execute("SELECT 1")
            assert time.monotonic() - started >= 0.19  # both streams: 2 x 100 ms per round trip
        finally:
            slow.revert()
    assert_clean(proxy_client)
