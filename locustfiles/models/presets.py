"""Workload presets named after real workloads (sources in /work/shared/reference/caching-facts.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cachestorm.core.errors import CachestormError


@dataclass(frozen=True)
class Preset:
    name: str
    key_model: str
    alpha: float
    mix: dict[str, float] = field(default_factory=dict)  # generic operations, see ops.py
    value_size: str = "230"
    note: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("ycsb-a", "zipf", 0.99, {"read": 0.5, "write": 0.5}, "1000", "update heavy"),
        Preset("ycsb-b", "zipf", 0.99, {"read": 0.95, "write": 0.05}, "1000", "read mostly"),
        Preset("ycsb-c", "zipf", 0.99, {"read": 1.0}, "1000", "read only"),
        Preset("ycsb-d", "latest", 0.99, {"read": 0.95, "write": 0.05}, "1000", "read latest; writes are inserts"),
        Preset("ycsb-e", "zipf", 0.99, {"scan": 0.95, "write": 0.05}, "1000", "short scans as reads of 1..10 ids"),
        Preset("ycsb-f", "zipf", 0.99, {"read": 0.5, "rmw": 0.5}, "1000", "read-modify-write"),
        # Yang et al. OSDI 2020: median alpha 1.21, median object ~230 B; the 10% write share is our choice
        Preset("twitter-median", "zipf", 1.21, {"read": 0.9, "write": 0.1}, "230", "Twitter median cluster"),
        # Atikoglu et al. SIGMETRICS 2012: GET:SET 30:1, values generalized Pareto; alpha 1.24 makes the
        # least popular half of 100k keys get ~1% of requests ("50% of keys appear in 1% of requests")
        Preset("meta-etc", "zipf", 1.24, {"read": 30 / 31, "write": 1 / 31}, "meta-etc", "Meta ETC pool"),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise CachestormError(f"--preset {name!r} is unknown; choose one of {', '.join(PRESETS)}") from None
