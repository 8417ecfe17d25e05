"""Toxic types: Toxiproxy's eight plus cachestorm's extras. Adding one = one file + one line in TOXICS."""

from __future__ import annotations

from cachestorm.chaos.proxy.toxics.base import Toxic

from cachestorm.core import plugins

# API type name -> "module:Class" (the class's type_name is the same name)
TOXICS: dict[str, str] = plugins.registry("toxic", {
    "latency": "cachestorm.chaos.proxy.toxics.latency:LatencyToxic",
    "bandwidth": "cachestorm.chaos.proxy.toxics.bandwidth:BandwidthToxic",
    "slow_close": "cachestorm.chaos.proxy.toxics.slow_close:SlowCloseToxic",
    "timeout": "cachestorm.chaos.proxy.toxics.timeout:TimeoutToxic",
    "reset_peer": "cachestorm.chaos.proxy.toxics.reset_peer:ResetPeerToxic",
    "slicer": "cachestorm.chaos.proxy.toxics.slicer:SlicerToxic",
    "limit_data": "cachestorm.chaos.proxy.toxics.limit_data:LimitDataToxic",
    "noop": "cachestorm.chaos.proxy.toxics.noop:NoopToxic",
    "redis_write_fail": "cachestorm.chaos.proxy.toxics.redis_write_fail:RedisWriteFailToxic",
    "redis_latency": "cachestorm.chaos.proxy.toxics.redis_latency:RedisLatencyToxic",
    "redis_error": "cachestorm.chaos.proxy.toxics.redis_error:RedisErrorToxic",
    "redis_failover": "cachestorm.chaos.proxy.toxics.redis_failover:RedisFailoverToxic",
    "slow_open": "cachestorm.chaos.proxy.toxics.slow_open:SlowOpenToxic",
})
# loaded when the proxy starts, not on its first toxic: a bad plug-in fails the start, not an API call
TOXIC_TYPES: dict[str, type[Toxic]] = {name: plugins.load(spec, "toxic") for name, spec in TOXICS.items()}

__all__ = ["TOXICS", "TOXIC_TYPES", "Toxic"]
