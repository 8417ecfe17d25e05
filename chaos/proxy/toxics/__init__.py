"""Toxic types by API name: Toxiproxy's eight plus cachestorm's extras."""

from __future__ import annotations

from cachestorm.chaos.proxy.toxics.bandwidth import BandwidthToxic
from cachestorm.chaos.proxy.toxics.base import Toxic
from cachestorm.chaos.proxy.toxics.latency import LatencyToxic
from cachestorm.chaos.proxy.toxics.limit_data import LimitDataToxic
from cachestorm.chaos.proxy.toxics.noop import NoopToxic
from cachestorm.chaos.proxy.toxics.redis_error import RedisErrorToxic
from cachestorm.chaos.proxy.toxics.redis_failover import RedisFailoverToxic
from cachestorm.chaos.proxy.toxics.redis_latency import RedisLatencyToxic
from cachestorm.chaos.proxy.toxics.redis_write_fail import RedisWriteFailToxic
from cachestorm.chaos.proxy.toxics.reset_peer import ResetPeerToxic
from cachestorm.chaos.proxy.toxics.slicer import SlicerToxic
from cachestorm.chaos.proxy.toxics.slow_close import SlowCloseToxic
from cachestorm.chaos.proxy.toxics.slow_open import SlowOpenToxic
from cachestorm.chaos.proxy.toxics.timeout import TimeoutToxic

TOXIC_TYPES: dict[str, type[Toxic]] = {
    cls.type_name: cls
    for cls in (
        LatencyToxic,
        BandwidthToxic,
        SlowCloseToxic,
        TimeoutToxic,
        ResetPeerToxic,
        SlicerToxic,
        LimitDataToxic,
        NoopToxic,
        RedisWriteFailToxic,
        RedisLatencyToxic,
        RedisErrorToxic,
        RedisFailoverToxic,
        SlowOpenToxic,
    )
}

__all__ = ["TOXIC_TYPES", "Toxic"]
