"""A proxy whose upstream is a local Unix socket (`unix:/abs/path.sock`, cachestorm extra): clients
still connect over TCP; both the native engine and the Python path reach a real Valkey over its
Unix socket, toxics behave the same, a missing socket resets the client; the stack uses it
by default (StackSettings.unix_upstreams)."""

from __future__ import annotations

import time

import pytest
import redis
from cachestorm.chaos.proxy.process import spawn
from cachestorm.chaos.toxiproxy import ToxiproxyClient

from tests.net_servers import how_it_closes

LATENCY_MS = 80


@pytest.fixture(scope="module", params=["native", "python"])
def proxy_process(request, tmp_path_factory, server_root):
    """One proxy process per engine: the native fast path (if built) and the Python path."""
    process = spawn(env={"CACHESTORM_PROXY_FASTPATH": "1" if request.param == "native" else "0"},
                    allow_unix=[tmp_path_factory.getbasetemp(), server_root])
    process.engine = request.param
    yield process
    process.stop()


@pytest.fixture()
def setup(valkey, proxy_process):
    """(toxiproxy client, direct redis, proxied redis, upstream string)."""
    upstream = f"unix:{valkey.extra['unix_socket']}"
    client = ToxiproxyClient(proxy_process.api_url)
    proxy = client.create_proxy("redis", "127.0.0.1:0", upstream)
    direct = redis.Redis.from_url(valkey.url)
    direct.flushall()
    proxied = redis.Redis.from_url(f"redis://{proxy['listen']}/0", socket_timeout=5)
    yield client, direct, proxied, upstream
    proxied.close()
    direct.close()
    client.delete_proxy("redis")
    client.close()


def _timed_get(client: redis.Redis, key: str) -> float:
    start = time.perf_counter()
    client.get(key)
    return time.perf_counter() - start


def test_get_set_through_unix_upstream(setup, proxy_process):
    client, direct, proxied, upstream = setup
    assert proxied.set("k", "v") is True
    assert direct.get("k") == b"v"  # it went to the real server
    assert [proxied.get("k") for _ in range(50)] == [b"v"] * 50
    proxy = client.get_proxy("redis")
    assert proxy["upstream"] == upstream  # echoed back as given
    assert proxy["stats"]["bytes_upstream"] > 0 and proxy["stats"]["bytes_downstream"] > 0
    native = proxy["stats"]["connections_native"]
    fastpath_built = ToxiproxyClient(proxy_process.api_url).info().get("fastpath")
    assert native == (1 if proxy_process.engine == "native" and fastpath_built else 0)


def test_latency_toxic_on_a_live_and_a_new_connection(setup):
    client, direct, proxied, _ = setup
    direct.set("k", "v")
    assert proxied.get("k") == b"v"  # live before the toxic (native engine, if on)
    assert _timed_get(proxied, "k") < LATENCY_MS / 1000
    client.add_toxic("redis", "latency", {"latency": LATENCY_MS}, stream="downstream")
    assert _timed_get(proxied, "k") >= 0.9 * LATENCY_MS / 1000  # handed to Python, delayed
    fresh = redis.Redis(host="127.0.0.1", port=proxied.connection_pool.connection_kwargs["port"], socket_timeout=5)
    try:
        assert fresh.ping() is True
        assert _timed_get(fresh, "k") >= 0.9 * LATENCY_MS / 1000
    finally:
        fresh.close()
    client.remove_toxic("redis", "latency_downstream")
    assert min(_timed_get(proxied, "k") for _ in range(5)) < LATENCY_MS / 1000
    assert proxied.get("k") == b"v"


def test_redis_write_fail_on_unix_upstream(setup):
    client, direct, proxied, _ = setup
    direct.set("k", "before")
    assert proxied.get("k") == b"before"
    client.add_toxic("redis", "redis_write_fail", {}, stream="upstream")
    with pytest.raises(redis.ResponseError, match="cachestorm: write failed by fault"):
        proxied.set("k", "after")
    assert proxied.get("k") == b"before"
    assert direct.get("k") == b"before"
    assert client.get_proxy("redis")["stats"]["writes_failed"] == 1
    client.remove_toxic("redis", "redis_write_fail_upstream")
    assert proxied.set("k", "after") is True
    assert direct.get("k") == b"after"


def test_missing_socket_closes_the_client(proxy_process, tmp_path):
    client = ToxiproxyClient(proxy_process.api_url)
    proxy = client.create_proxy("dead", "127.0.0.1:0", f"unix:{tmp_path / 'nobody-listens.sock'}")
    try:
        port = int(proxy["listen"].rsplit(":", 1)[1])
        assert [how_it_closes(port) for _ in range(3)] == ["eof"] * 3  # accepted, then a FIN
    finally:
        client.delete_proxy("dead")
        client.close()


def test_default_stack_reaches_its_own_servers_over_unix_sockets(stack):
    with ToxiproxyClient(stack.proxy_api_url) as client:
        proxies = client.proxies()
    for name in ("redis", "postgres"):
        assert proxies[name]["upstream"].startswith("unix:"), proxies[name]


def test_unix_upstream_setting():
    from cachestorm.stack import StackSettings, _unix_upstreams_wanted

    assert _unix_upstreams_wanted(StackSettings()) is True
    assert _unix_upstreams_wanted(StackSettings(unix_upstreams=False)) is False
    # a real Toxiproxy speaks TCP only, whatever was asked
    assert _unix_upstreams_wanted(StackSettings(unix_upstreams=True, toxiproxy_url="http://127.0.0.1:8474")) is False


def test_stack_with_unix_upstreams_survives_restart():
    import psycopg

    from cachestorm.stack import StackSettings, restart_redis, start_stack, stop_stack

    state = start_stack(StackSettings(unix_upstreams=True))
    proxied = redis.Redis.from_url(state.redis_proxy_url, socket_timeout=5)
    try:
        redis_server = next(s for s in state.servers if s["kind"] == "redis")
        postgres_server = next(s for s in state.servers if s["kind"] == "postgres")
        socket_path = redis_server["extra"]["unix_socket"]
        with ToxiproxyClient(state.proxy_api_url) as client:
            proxies = client.proxies()
        assert proxies["redis"]["upstream"] == f"unix:{socket_path}"
        assert proxies["postgres"]["upstream"] == f"unix:{postgres_server['extra']['unix_socket']}"
        with psycopg.connect(state.postgres_proxy_url, connect_timeout=5) as conn:
            assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
        assert proxied.set("unix-stack", "1") is True
        assert redis.Redis.from_url(state.redis_url).get("unix-stack") == b"1"
        restart_redis(state)
        restarted = next(s for s in state.servers if s["kind"] == "redis")
        assert restarted["pid"] != redis_server["pid"]
        assert restarted["extra"]["unix_socket"] == socket_path
        proxied.close()  # its connection died with the old server
        assert proxied.get("unix-stack") is None  # the cache is lost, the proxied URL works
        assert proxied.set("unix-stack", "2") is True
    finally:
        proxied.close()
        stop_stack(state)
