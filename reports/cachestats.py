"""Cache behaviour from the targets' counters: hit ratio over time, stale serves, recomputes."""

from __future__ import annotations

from collections import defaultdict

from cachestorm.reports.metrics import CounterSeries
from cachestorm.reports.phases import Phase

RESULTS = "cachestorm_cache_results_total"
TOTALS = {
    "recomputes": "cachestorm_recomputes_total",
    "coalesced_waiters": "cachestorm_coalesced_waiters_total",
    "lock_waits": "cachestorm_lock_waits_total",
    "lease_waits": "cachestorm_lease_waits_total",
    "pool_waits": "cachestorm_pool_waits_total",
    "cache_errors": "cachestorm_cache_errors_total",
    "lease_refused": "cachestorm_lease_refused_total",               # fills refused: the lease was void
    "permission_violations": "cachestorm_permission_violations_total",  # the targets' own revoke check
}


def analyze_cache(metrics: CounterSeries, phases: list[Phase]) -> dict:
    results = metrics.label_values(RESULTS, "result")
    per_second: dict[int, dict[str, float]] = defaultdict(dict)
    totals = {}
    for result in results:
        totals[result] = metrics.increase(RESULTS, result=result)
        for second, rate in metrics.rate(RESULTS, result=result):
            per_second[second][result] = rate
    lookups = sum(totals.values())
    series = []
    for second in sorted(per_second):
        counts = per_second[second]
        total = sum(counts.values())
        series.append({"t": second, "hit_ratio": (counts.get("hit", 0.0) / total) if total else None,
                       "stale_per_s": round(counts.get("stale", 0.0), 3), "lookups_per_s": round(total, 3)})
    by_class = {}
    for key_class in metrics.label_values(RESULTS, "key_class"):
        hits = metrics.increase(RESULTS, result="hit", key_class=key_class)
        all_results = metrics.increase(RESULTS, key_class=key_class)
        by_class[key_class] = (hits / all_results) if all_results else None
    by_phase = {}
    for phase in phases:
        points = [p for p in series if phase.contains_second(p["t"]) and p["lookups_per_s"]]
        lookups_in_phase = sum(p["lookups_per_s"] for p in points)
        hits_in_phase = sum(p["hit_ratio"] * p["lookups_per_s"] for p in points)
        by_phase[phase.name] = (hits_in_phase / lookups_in_phase) if lookups_in_phase else None
    return {
        "available": bool(results),
        "hit_ratio": (totals.get("hit", 0.0) / lookups) if lookups else None,
        "results": totals,
        "stale_serves": totals.get("stale", 0.0),
        "hit_ratio_by_key_class": by_class,
        "hit_ratio_by_phase": by_phase,
        **{name: metrics.increase(metric) for name, metric in TOTALS.items()},
        "series": series,
    }
