"""Per-proxy counters, shown in GET /proxies ("stats") and on /metrics."""

from __future__ import annotations

from collections import Counter


class ProxyStats:
    def __init__(self):
        self.connections_total = 0
        self.closed_bytes_upstream = 0  # bytes of connections already closed
        self.closed_bytes_downstream = 0
        self.closed_sent_upstream = 0  # of those, written on (toxics may drop some)
        self.closed_sent_downstream = 0
        self.toxics_applied: Counter[str] = Counter()  # toxic type -> connections it applied to
        self.writes_failed = 0  # redis_write_fail: failed or dropped writes
        self.commands_faulted: Counter[str] = Counter()  # RESP-aware toxic type -> commands it acted on

    def toxic_applied(self, toxic_type: str) -> None:
        self.toxics_applied[toxic_type] += 1
