"""PostgreSQL unreachable for a while: its proxy is disabled."""

from __future__ import annotations

from dataclasses import dataclass

from cachestorm.chaos.faults.proxy_down import ProxyDown


@dataclass
class DatabaseDown(ProxyDown):
    name = "db-down"
    summary = "disable the PostgreSQL proxy: the targets' DB connections fail"

    proxy: str = "postgres"
