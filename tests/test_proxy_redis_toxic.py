"""redis_write_fail through a real Valkey with redis-py: writes fail (or vanish), reads pass."""

from __future__ import annotations

import socket
import time

import pytest
import redis
from cachestorm.chaos.toxiproxy import ToxiproxyClient


@pytest.fixture()
def setup(valkey, proxy_process):
    """(toxiproxy client, direct redis, proxied redis)."""
    upstream = valkey.url.split("//")[1].split("/")[0]
    client = ToxiproxyClient(proxy_process.api_url)
    proxy = client.create_proxy("redis", "127.0.0.1:0", upstream)
    direct = redis.Redis.from_url(valkey.url)
    direct.flushall()
    proxied = redis.Redis.from_url(f"redis://{proxy['listen']}/0")
    yield client, direct, proxied
    proxied.close()
    direct.close()
    client.delete_proxy("redis")
    client.close()


def test_set_fails_while_get_succeeds(setup):
    client, direct, proxied = setup
    direct.set("k", "before")
    assert proxied.get("k") == b"before"
    client.add_toxic("redis", "redis_write_fail", {}, stream="upstream")
    with pytest.raises(redis.ResponseError, match="cachestorm: write failed by fault"):
        proxied.set("k", "after")
    with pytest.raises(redis.ResponseError):
        proxied.delete("k")
    assert proxied.get("k") == b"before"
    assert direct.get("k") == b"before"
    assert client.get_proxy("redis")["stats"]["writes_failed"] == 2
    client.remove_toxic("redis", "redis_write_fail_upstream")
    assert proxied.set("k", "after") is True
    assert direct.get("k") == b"after"


def test_drop_mode_loses_writes_silently(setup):
    client, direct, proxied = setup
    client.add_toxic("redis", "redis_write_fail", {"mode": "drop"})
    assert proxied.set("lost", "v") is True
    assert proxied.incr("counter") == 1
    assert direct.get("lost") is None and direct.get("counter") is None


def test_pipelined_replies_stay_in_order(setup):
    client, direct, proxied = setup
    direct.set("a", "1")
    # redis-py sends INCR as INCRBY
    client.add_toxic("redis", "redis_write_fail", {"commands": ["SET", "INCRBY"]})
    pipe = proxied.pipeline(transaction=False)
    pipe.get("a").set("b", "2").get("a").incr("n").exists("a").get("b")
    results = pipe.execute(raise_on_error=False)
    assert results[0] == b"1" and results[2] == b"1" and results[4] == 1 and results[5] is None
    assert isinstance(results[1], redis.ResponseError) and isinstance(results[3], redis.ResponseError)
    assert direct.get("n") is None and direct.get("b") is None


def test_commands_split_across_tcp_chunks(setup, proxy_process):
    client, direct, _ = setup
    port = int(client.get_proxy("redis")["listen"].rsplit(":", 1)[1])
    client.add_toxic("redis", "redis_write_fail", {})
    direct.set("x", "yes")
    wire = b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$2\r\nno\r\n*2\r\n$3\r\nGET\r\n$1\r\nx\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        for index in range(len(wire)):  # one byte per TCP write
            sock.sendall(wire[index : index + 1])
            time.sleep(0.001)
        expected = b"-ERR cachestorm: write failed by fault\r\n$3\r\nyes\r\n"
        got = b""
        while len(got) < len(expected):
            chunk = sock.recv(1024)
            assert chunk, f"connection closed after {got!r}"
            got += chunk
    assert got == expected


def test_rate_fails_about_that_share(setup):
    client, direct, proxied = setup
    client.add_toxic("redis", "redis_write_fail", {"rate": 0.5})
    failed = 0
    for index in range(300):
        try:
            proxied.set(f"r{index}", "v")
        except redis.ResponseError:
            failed += 1
    assert 100 <= failed <= 200, failed
    assert len(direct.keys("r*")) == 300 - failed
    assert client.get_proxy("redis")["stats"]["writes_failed"] == failed


def test_toxic_with_duration_goes_away(setup):
    client, _, proxied = setup
    client.add_toxic("redis", "redis_write_fail", {"duration": 300})
    with pytest.raises(redis.ResponseError):
        proxied.set("d", "1")
    deadline = time.monotonic() + 3
    while client.toxics("redis") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.toxics("redis") == []
    assert proxied.set("d", "1") is True


def test_bad_mode_is_400(setup):
    client, _, _ = setup
    from cachestorm.chaos.toxiproxy import ToxiproxyError

    with pytest.raises(ToxiproxyError) as failure:
        client.add_toxic("redis", "redis_write_fail", {"mode": "explode"})
    assert failure.value.status == 400


def test_keys_narrow_the_failed_writes(setup):
    client, direct, proxied = setup
    client.add_toxic("redis", "redis_write_fail", {"keys": ["profiles:*"]})
    with pytest.raises(redis.ResponseError, match="write failed"):
        proxied.set("profiles:1", "v")
    assert proxied.set("sessions:1", "v") is True
    with pytest.raises(redis.ResponseError):
        proxied.mset({"sessions:2": "v", "profiles:2": "v"})  # one of its keys matches
    assert direct.get("sessions:1") == b"v" and direct.get("sessions:2") is None


def test_inline_commands_are_matched_by_key_too(setup):
    client, direct, _ = setup
    port = int(client.get_proxy("redis")["listen"].rsplit(":", 1)[1])
    client.add_toxic("redis", "redis_write_fail", {"keys": ["hot:*"]})
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(b"SET cold:1 v\r\nSET hot:1 v\r\nGET cold:1\r\n")
        expected = b"+OK\r\n-ERR cachestorm: write failed by fault\r\n$1\r\nv\r\n"
        got = b""
        while len(got) < len(expected):
            chunk = sock.recv(1024)
            assert chunk, f"connection closed after {got!r}"
            got += chunk
    assert got == expected and direct.get("hot:1") is None
