"""Latency (and jitter) between the targets and Redis."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.proxy_latency import ProxyLatency


@dataclass
class RedisLatency(ProxyLatency):
    name = "redis-latency"
    summary = "latency/jitter toxic on the Redis proxy"

    proxy: str = "redis"
