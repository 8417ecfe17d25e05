"""Cache behaviour from the targets' counters: hit ratio over time (cachestorm/core/hitratio.py says
what it counts), stale serves, recomputes."""

from __future__ import annotations

from collections import defaultdict

from cachestorm.reports.metrics import CounterSeries
from cachestorm.reports.phases import Phase

from cachestorm.core.hitratio import RESULTS_METRIC, fresh_hit_ratio, hit_ratio, lookups

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
    results = metrics.label_values(RESULTS_METRIC, "result")
    per_second: dict[int, dict[str, float]] = defaultdict(dict)
    totals = {}
    for result in results:
        totals[result] = metrics.increase(RESULTS_METRIC, result=result)
        for second, rate in metrics.rate(RESULTS_METRIC, result=result):
            per_second[second][result] = rate
    series = []
    for second in sorted(per_second):
        counts = per_second[second]
        series.append({"t": second, "hit_ratio": hit_ratio(counts),
                       "stale_per_s": round(counts.get("stale", 0.0), 3), "lookups_per_s": round(lookups(counts), 3)})
    by_class = {}
    for key_class in metrics.label_values(RESULTS_METRIC, "key_class"):
        by_class[key_class] = hit_ratio({result: metrics.increase(RESULTS_METRIC, result=result, key_class=key_class)
                                         for result in results})
    by_phase = {}
    for phase in phases:
        points = [p for p in series if phase.contains_second(p["t"]) and p["lookups_per_s"]]
        lookups_in_phase = sum(p["lookups_per_s"] for p in points)
        hits_in_phase = sum(p["hit_ratio"] * p["lookups_per_s"] for p in points)
        by_phase[phase.name] = (hits_in_phase / lookups_in_phase) if lookups_in_phase else None
    return {
        "available": bool(results),
        "hit_ratio": hit_ratio(totals),
        "fresh_hit_ratio": fresh_hit_ratio(totals),
        "results": totals,
        "stale_serves": totals.get("stale", 0.0),
        "hit_ratio_by_key_class": by_class,
        "hit_ratio_by_phase": by_phase,
        **{name: metrics.increase(metric) for name, metric in TOTALS.items()},
        "series": series,
    }
