"""The fault library: registry name -> "module:Class" (imported on use)."""

from __future__ import annotations

from cachestorm.core import plugins
from cachestorm.core.errors import CachestormError

FAULTS: dict[str, str] = plugins.registry("fault", {
    # hot keys and expiry
    "hot-key-expiry": "cachestorm.chaos.faults.hot_key_expiry:HotKeyExpiry",
    "hot-key-expiry-repeated": "cachestorm.chaos.faults.hot_key_expiry_repeated:HotKeyExpiryRepeated",
    "key-pattern-expiry": "cachestorm.chaos.faults.key_pattern_expiry:KeyPatternExpiry",
    "synchronized-expiry": "cachestorm.chaos.faults.synchronized_expiry:SynchronizedExpiry",
    "flush-cache": "cachestorm.chaos.faults.flush_cache:FlushCache",
    "lfu-tracking": "cachestorm.chaos.faults.lfu_tracking:LfuTracking",
    # Redis partition through the proxy
    "redis-down": "cachestorm.chaos.faults.redis_down:RedisDown",
    "redis-blackhole": "cachestorm.chaos.faults.redis_blackhole:RedisBlackhole",
    "redis-reset": "cachestorm.chaos.faults.redis_reset:RedisReset",
    "redis-latency": "cachestorm.chaos.faults.redis_latency:RedisLatency",
    "redis-bandwidth": "cachestorm.chaos.faults.redis_bandwidth:RedisBandwidth",
    # failed cache writes
    "redis-write-fail": "cachestorm.chaos.faults.redis_write_fail:RedisWriteFail",
    "cache-delete-fail": "cachestorm.chaos.faults.cache_delete_fail:CacheDeleteFail",
    "redis-oom": "cachestorm.chaos.faults.redis_oom:RedisOom",
    "redis-acl-readonly": "cachestorm.chaos.faults.redis_acl_readonly:RedisAclReadonly",
    # Redis-protocol faults (our proxy's RESP-aware toxics)
    "redis-command-latency": "cachestorm.chaos.faults.redis_command_latency:RedisCommandLatency",
    "redis-error-reply": "cachestorm.chaos.faults.redis_error_reply:RedisErrorReply",
    "redis-failover": "cachestorm.chaos.faults.redis_failover:RedisFailover",
    # database trouble
    "db-latency": "cachestorm.chaos.faults.db_latency:DatabaseLatency",
    "db-down": "cachestorm.chaos.faults.db_down:DatabaseDown",
    "db-slow-recompute": "cachestorm.chaos.faults.db_slow_recompute:DatabaseSlowRecompute",
    # processes
    "target-kill": "cachestorm.chaos.faults.target_kill:TargetKill",
    "target-pause": "cachestorm.chaos.faults.target_pause:TargetPause",
    "redis-restart": "cachestorm.chaos.faults.redis_restart:RedisRestart",
})


def fault_class(name: str):
    spec = FAULTS.get(name)
    if spec is None:
        raise CachestormError(f"unknown fault {name!r}; known faults: {', '.join(sorted(FAULTS))}")
    return plugins.load(spec, "fault")


def make_fault(name: str, settings: dict | None = None):
    """A fault with its settings parsed and checked (SettingError on a bad one)."""
    return fault_class(name).from_settings(settings)
