"""Latency between the targets and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.proxy_latency import ProxyLatency


@dataclass
class DatabaseLatency(ProxyLatency):
    name = "db-latency"
    summary = "latency/jitter toxic on the PostgreSQL proxy"

    latency_ms: int = 50
    proxy: str = "postgres"
