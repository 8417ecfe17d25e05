"""A slow recompute: every DB answer takes `latency_ms` longer.

We chose a latency toxic on the PostgreSQL proxy (both streams) over a knob inside the targets:
it needs nothing from the target, works on any target and on a real Toxiproxy. A recompute is
one or more DB round trips, so it slows by at least `latency_ms` (x2 with both streams).
"""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.proxy_latency import ProxyLatency


@dataclass
class DatabaseSlowRecompute(ProxyLatency):
    name = "db-slow-recompute"
    summary = "latency toxic on the PostgreSQL proxy, both streams: each recompute is slow"

    latency_ms: int = 200
    proxy: str = "postgres"
    stream: str = "both"
