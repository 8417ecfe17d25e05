"""Toxic types by API name: Toxiproxy's eight plus cachestorm's extras."""

from __future__ import annotations

from chaos.proxy.toxics.bandwidth import BandwidthToxic
from chaos.proxy.toxics.base import Toxic
from chaos.proxy.toxics.latency import LatencyToxic
from chaos.proxy.toxics.limit_data import LimitDataToxic
from chaos.proxy.toxics.noop import NoopToxic
from chaos.proxy.toxics.redis_error import RedisErrorToxic
from chaos.proxy.toxics.redis_failover import RedisFailoverToxic
from chaos.proxy.toxics.redis_latency import RedisLatencyToxic
from chaos.proxy.toxics.redis_write_fail import RedisWriteFailToxic
from chaos.proxy.toxics.reset_peer import ResetPeerToxic
from chaos.proxy.toxics.slicer import SlicerToxic
from chaos.proxy.toxics.slow_close import SlowCloseToxic
from chaos.proxy.toxics.slow_open import SlowOpenToxic
from chaos.proxy.toxics.timeout import TimeoutToxic

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
EXTRA_TOXIC_TYPES = ("redis_write_fail", "redis_latency", "redis_error", "redis_failover", "slow_open")

__all__ = ["TOXIC_TYPES", "EXTRA_TOXIC_TYPES", "Toxic"]
