"""Redis unreachable for a while: its proxy is disabled."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.proxy_down import ProxyDown


@dataclass
class RedisDown(ProxyDown):
    name = "redis-down"
    summary = "disable the Redis proxy: new connections refused, open ones closed"

    proxy: str = "redis"
