"""Redis-native faults against the real (embedded) Valkey, each checked by its effect."""

from __future__ import annotations

import time

import pytest
import redis
from cachestorm.chaos.context import ChaosContext
from cachestorm.chaos.faults import make_fault
from cachestorm.chaos.ledger import Ledger, heal

from cachestorm.stack import context_from_stack


@pytest.fixture()
def ctx(stack, tmp_path) -> ChaosContext:
    return context_from_stack(stack, ledger_path=str(tmp_path / "ledger.jsonl"))


def fill(client, domain: str, n: int) -> None:
    client.mset({f"{domain}:{i}": f"v{i}" for i in range(1, n + 1)})


def test_hot_key_expiry_evict_deletes_exactly_the_hot_keys(ctx, redis_client):
    fill(redis_client, "profiles", 50)
    fill(redis_client, "products", 5)
    fault = make_fault("hot-key-expiry", {"count": 10, "mode": "evict"}).bind(ctx)
    details = fault.apply()
    assert details["keys"] == 10 and details["key_ids"] == [str(i) for i in range(1, 11)]
    remaining = {k.decode() for k in redis_client.keys("profiles:*")}
    assert remaining == {f"profiles:{i}" for i in range(11, 51)}
    assert redis_client.exists(*[f"products:{i}" for i in range(1, 6)]) == 5
    assert fault.revert() == {} and fault.revert() == {"skipped": True}


def test_hot_key_expiry_expires_entries_in_place(ctx, redis_client):
    """The default mode ends each hot entry's TTL now: the value and its Redis TTL stay (stale-while-
    revalidate can serve it), its logical expiry is now; what is not an entry is deleted."""
    entry = '{"x":%r,"d":0.05,"r":{"id":%d,"version":3,"data":{"name":"n"}}}'
    later = time.time() + 600
    for key_id in range(1, 13):
        redis_client.set(f"profiles:{key_id}", entry % (later, key_id), px=700_000)
    redis_client.set("profiles:5", "not an entry")
    details = make_fault("hot-key-expiry", {"count": 10}).bind(ctx).apply()
    assert details["keys"] == 10 and details["mode"] == "expire"
    now = time.time()
    from cachestorm.targets.cache import Entry

    for key_id in (1, 2, 10):
        stored = Entry.decode(redis_client.get(f"profiles:{key_id}"))
        assert not stored.fresh(now) and now - stored.expires_at < 5
        assert stored.record["version"] == 3 and stored.delta == 0.05
        assert redis_client.pttl(f"profiles:{key_id}") > 600_000  # kept as long as the strategy keeps it
    assert not redis_client.exists("profiles:5")
    assert Entry.decode(redis_client.get("profiles:11")).fresh(now)  # not a hot key: untouched


def test_hot_key_expiry_repeated_expires_the_refilled_keys_again_until_its_window_ends(ctx, redis_client):
    """What the strategy refills between two expiries is expired again (each expiry finds a fresh
    entry), the repeats stop with the window, and the revert counts every key of every expiry."""
    from cachestorm.targets.cache import Entry

    entry = '{"x":%r,"d":0.05,"r":{"id":%d,"version":3,"data":{"name":"n"}}}'

    def refill():
        for key_id in range(1, 4):
            redis_client.set(f"profiles:{key_id}", entry % (time.time() + 600, key_id), px=700_000)

    def fresh() -> bool:
        return Entry.decode(redis_client.get("profiles:1")).fresh(time.time())

    refill()
    started = time.monotonic()
    fault = make_fault("hot-key-expiry-repeated", {"count": 3, "every_ms": 500}).bind(ctx, window_s=2.0)
    assert fault.apply()["keys"] == 3 and not fresh()
    refill()  # the strategy's refill after the first expiry
    while fresh() and time.monotonic() - started < 1.9:
        time.sleep(0.02)
    assert not fresh()  # expired again by a repeat (due at 0.5, 1.0, 1.5 s)
    time.sleep(max(0.0, 2.3 - (time.monotonic() - started)))
    refill()
    time.sleep(0.6)  # past the window: nothing expires any more
    assert fresh()
    details = fault.revert()
    assert details["expiries"] == 4 and details["keys"] == 12


def test_hot_key_expiry_repeated_fails_its_revert_when_an_expiry_failed(ctx, redis_client, monkeypatch):
    """A repeat that could not reach Redis makes the fault fail loudly, not pass as if it expired."""
    fill(redis_client, "profiles", 3)
    fault = make_fault("hot-key-expiry-repeated", {"count": 3, "every_ms": 100}).bind(ctx, window_s=0.5)
    fault.apply()
    monkeypatch.setattr(fault, "_expire", lambda client, keys: (_ for _ in ()).throw(redis.ConnectionError("down")))
    time.sleep(0.6)
    with pytest.raises(Exception, match="repeated expiries failed.*down"):
        fault.revert()


def test_hot_key_expiry_by_lfu_frequency(ctx, redis_client):
    fill(redis_client, "profiles", 30)
    tracking = make_fault("lfu-tracking").bind(ctx)
    tracking.apply()
    try:
        for _ in range(200):  # keys 7, 8, 9 are the hot ones
            redis_client.get("profiles:7"), redis_client.get("profiles:8"), redis_client.get("profiles:9")
        details = make_fault("hot-key-expiry", {"count": 3, "source": "lfu"}).bind(ctx).apply()
    finally:
        tracking.revert()
    assert sorted(details["key_ids"]) == ["7", "8", "9"]
    assert redis_client.exists("profiles:7", "profiles:8", "profiles:9") == 0
    assert redis_client.dbsize() == 27
    assert redis_client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"


def test_pattern_synchronized_expiry_and_flush(ctx, redis_client):
    fill(redis_client, "profiles", 20)
    fill(redis_client, "products", 20)
    assert make_fault("key-pattern-expiry", {"pattern": "products:*"}).bind(ctx).apply()["keys"] == 20
    assert redis_client.dbsize() == 20
    details = make_fault("synchronized-expiry", {"ttl_ms": 300}).bind(ctx).apply()
    assert details["keys"] == 20
    expiries = {redis_client.pexpiretime(f"profiles:{i}") for i in range(1, 21)}
    assert len(expiries) == 1 and expiries.pop() == details["expire_at_ms"]
    deadline = time.monotonic() + 5
    while redis_client.dbsize() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client.dbsize() == 0
    fill(redis_client, "profiles", 5)
    assert make_fault("flush-cache").bind(ctx).apply() == {"keys": 5}
    assert redis_client.dbsize() == 0


def test_synchronized_expiry_refills_entries_with_one_ttl(ctx, redis_client):
    """Entries with spread expiries (a steady-state cache) all get the same logical and physical expiry."""
    from cachestorm.targets.cache import Entry

    now = time.time()
    for key_id in range(1, 31):
        entry = Entry({"id": key_id, "version": 2, "data": {}}, now + key_id * 10, 0.05)
        redis_client.set(f"profiles:{key_id}", entry.encode(), px=key_id * 10_000)
    details = make_fault("synchronized-expiry", {"ttl_ms": 4000}).bind(ctx).apply()
    assert details["keys"] == 30 and details["wave_in_s"] == 4.0
    expiries = {Entry.decode(redis_client.get(f"profiles:{k}")).expires_at for k in range(1, 31)}
    assert expiries == {details["expire_at_ms"] / 1000}
    assert {redis_client.pexpiretime(f"profiles:{k}") for k in range(1, 31)} == {details["expire_at_ms"]}
    assert Entry.decode(redis_client.get("profiles:7")).record["version"] == 2  # the value itself is kept


def test_oom_fails_writes_reads_work_and_revert_restores(ctx, redis_client):
    redis_client.set("profiles:1", "x")
    before = redis_client.config_get("maxmemory*")
    fault = make_fault("redis-oom").bind(ctx)
    try:
        fault.apply()
        with pytest.raises(redis.exceptions.OutOfMemoryError, match="maxmemory"):
            redis_client.set("profiles:2", "y")
        assert redis_client.get("profiles:1") == b"x"
    finally:
        fault.revert()
    fault.revert()  # safe twice
    redis_client.set("profiles:2", "y")
    assert redis_client.get("profiles:2") == b"y"
    after = redis_client.config_get("maxmemory*")
    assert (after["maxmemory"], after["maxmemory-policy"]) == (before["maxmemory"], before["maxmemory-policy"])


def test_acl_denies_writes_to_default_user_and_revert_restores(ctx, redis_client):
    redis_client.set("profiles:1", "x")
    acl_before = redis_client.acl_list()
    fault = make_fault("redis-acl-readonly").bind(ctx)
    try:
        fault.apply()
        target = redis.Redis.from_url(ctx.redis_url)  # connects as `default`, like the targets
        with pytest.raises(redis.exceptions.NoPermissionError):
            target.set("profiles:2", "y")
        assert target.get("profiles:1") == b"x"
        target.close()
    finally:
        fault.revert()
    fault.revert()
    redis_client.set("profiles:2", "y")
    assert redis_client.acl_list() == acl_before  # no admin user left, default's rules as before


def test_heal_reverts_a_fault_left_by_a_dead_controller(ctx, redis_client):
    before = redis_client.config_get("maxmemory*")
    fault = make_fault("redis-oom").bind(ctx)
    fault.prepare()
    ledger = Ledger(ctx.ledger_path)
    ledger.add(fault, ctx)
    fault.apply()
    del fault  # the controller is gone; only the ledger remains
    assert len(ledger.active()) == 1
    results = heal(ctx.ledger_path)
    assert [r["outcome"] for r in results] == ["reverted"]
    assert ledger.active() == []
    after = redis_client.config_get("maxmemory*")
    assert (after["maxmemory"], after["maxmemory-policy"]) == (before["maxmemory"], before["maxmemory-policy"])
    redis_client.set("k", "v")


def test_remote_addresses_are_refused_unless_allowed(tmp_path):
    ctx = ChaosContext(redis_url="redis://10.20.30.40:6379/0", ledger_path=tmp_path / "l")
    fault = make_fault("flush-cache").bind(ctx)
    with pytest.raises(Exception, match="not a loopback address"):
        fault.check()
    ctx.allow_remote = True
    fault.check()
    ChaosContext(redis_url="redis://localhost:1/0").check_local("redis://[::1]:1/0", "Redis")


def test_admin_commands_keep_working_while_the_acl_fault_is_active(ctx, redis_client):
    fill(redis_client, "profiles", 15)
    acl = make_fault("redis-acl-readonly").bind(ctx)
    try:
        acl.apply()
        assert make_fault("hot-key-expiry", {"count": 10}).bind(ctx).apply()["keys"] == 10
    finally:
        acl.revert()
    assert redis_client.dbsize() == 5 and ctx.redis_admin_auth is None
