"""The headline numbers of a run (report.json `headline`): what the gate, comparisons and tables use.

`CATALOG` says, per metric, its label, unit and which direction is better.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    label: str
    unit: str
    better: str  # "lower" | "higher"


CATALOG: dict[str, MetricInfo] = {
    "requests": MetricInfo("requests", "", "higher"),
    "p50_ms": MetricInfo("p50", "ms", "lower"),
    "p99_ms": MetricInfo("p99", "ms", "lower"),
    "p999_ms": MetricInfo("p99.9", "ms", "lower"),
    "max_ms": MetricInfo("max latency", "ms", "lower"),
    "p99_ms_before_fault": MetricInfo("p99 before fault", "ms", "lower"),
    "p99_ms_during_fault": MetricInfo("p99 during fault", "ms", "lower"),
    "error_rate": MetricInfo("error rate", "", "lower"),
    "errors": MetricInfo("errors", "", "lower"),
    "timeouts": MetricInfo("timeouts", "", "lower"),
    "timeouts_during_fault": MetricInfo("client timeouts during fault", "", "lower"),
    "pool_timeouts": MetricInfo("pool timeouts", "", "lower"),
    "pool_timeouts_during_fault": MetricInfo("pool timeouts during fault", "", "lower"),
    "attempts_per_request_during_fault": MetricInfo("attempts per request during fault", "", "lower"),
    "db_p99_ms_before_fault": MetricInfo("DB query p99 before fault", "ms", "lower"),
    "db_p99_ms_during_fault": MetricInfo("DB query p99 during fault", "ms", "lower"),
    "recovered_on_its_own": MetricInfo("recovered on its own", "", "higher"),
    "time_to_recover_s": MetricInfo("time to recover (clients' view)", "s", "lower"),
    "db_second_wave_peak_reads_per_s": MetricInfo("DB peak of the second expiry wave", "q/s", "lower"),
    "attempts_per_request": MetricInfo("attempts per request", "", "lower"),
    "db_amplification": MetricInfo("DB amplification", "x", "lower"),
    "db_peak_queries_per_s": MetricInfo("DB peak", "q/s", "lower"),
    "db_steady_queries_per_s": MetricInfo("DB steady", "q/s", "lower"),
    "db_loads_per_expiry": MetricInfo("DB loads per hot-key expiry", "", "lower"),
    "recovery_s": MetricInfo("recovery", "s", "lower"),
    "hit_ratio": MetricInfo("hit ratio", "", "higher"),
    "stale_serves": MetricInfo("stale serves", "", "lower"),
    "stale_reads": MetricInfo("stale reads", "", "lower"),
    "stale_reads_over_bound": MetricInfo("stale reads over bound", "", "lower"),
    "max_staleness_s": MetricInfo("max staleness", "s", "lower"),
    "p99_staleness_s": MetricInfo("p99 staleness", "s", "lower"),
    "ryw_violations": MetricInfo("read-your-writes violations", "", "lower"),
    "lost_writes": MetricInfo("lost writes", "", "lower"),
    "counter_lost": MetricInfo("counters with lost increments", "", "lower"),
    "counter_duplicated": MetricInfo("counters with duplicated increments", "", "lower"),
    "revoked_granted": MetricInfo("granted after revoke", "", "lower"),
    "anomalies": MetricInfo("consistency anomalies", "", "lower"),
}


def nines_metric(within_s: float) -> str:
    return f"nines_within_{within_s:g}s"


def build_headline(analysis: dict) -> dict:
    latency = analysis.get("latency") or {}
    overall = latency.get("overall") or {}
    during = latency.get("during_fault") or {}
    before = next((summary for name, summary in (latency.get("by_phase") or {}).items()
                   if name in ("before", "steady") and summary), {})
    errors = analysis.get("errors") or {}
    db = analysis.get("db") or {}
    cache = analysis.get("cache") or {}
    consistency = analysis.get("consistency") or {}
    incident = analysis.get("incident") or {}
    window = incident.get("window") or {}
    db_latency = incident.get("db_latency") or {}
    findings = consistency.get("findings") or {}
    stale = findings.get("stale_reads") or {}
    counters = findings.get("counters") or {}
    headline = {
        # every logical request (latency counts), else the HDR count, else the (sampled) histories
        "requests": (latency.get("counts") or {}).get("requests") or overall.get("count") or errors.get("operations"),
        "p50_ms": overall.get("p50_ms"),
        "p99_ms": overall.get("p99_ms"),
        "p999_ms": overall.get("p999_ms"),
        "max_ms": overall.get("max_ms"),
        "p99_ms_before_fault": before.get("p99_ms"),
        "p99_ms_during_fault": during.get("p99_ms"),
        "error_rate": errors.get("error_rate"),
        "errors": errors.get("errors"),
        # every attempt's timeout (the locustfiles count them all), else the sampled histories'
        "timeouts": window["timeouts"] if window.get("timeouts") is not None
        else (errors.get("by_kind") or {}).get("timeout", 0) if errors else None,
        "timeouts_during_fault": window.get("timeouts_during_fault"),
        "pool_timeouts": window.get("pool_timeouts"),
        "pool_timeouts_during_fault": window.get("pool_timeouts_during_fault"),
        "attempts_per_request_during_fault": window.get("attempts_per_request_during_fault"),
        "db_p99_ms_before_fault": db_latency.get("p99_ms_before_fault"),
        "db_p99_ms_during_fault": db_latency.get("p99_ms_during_fault"),
        "recovered_on_its_own": (incident.get("metastability") or {}).get("recovered_on_its_own"),
        "time_to_recover_s": (incident.get("metastability") or {}).get("recovery_s"),
        "db_second_wave_peak_reads_per_s": max((w["second_wave_peak_reads_per_s"] for w in incident.get("expiry_waves") or []
                                                 if w["second_wave_peak_reads_per_s"] is not None), default=None),
        "attempts_per_request": errors.get("attempts_per_request"),
        "db_amplification": db.get("amplification"),
        "db_peak_queries_per_s": db.get("peak_queries_per_s"),
        "db_steady_queries_per_s": db.get("steady_queries_per_s"),
        "db_loads_per_expiry": db.get("db_loads_per_expiry"),
        "recovery_s": db.get("recovery_s"),
        "hit_ratio": cache.get("hit_ratio"),
        "stale_serves": cache.get("stale_serves") if cache.get("available") else None,
        "stale_reads": stale.get("count") if consistency else None,
        "stale_reads_over_bound": stale.get("over_bound"),
        "max_staleness_s": ((stale.get("staleness_s") or {}).get("max") or 0.0) if consistency else None,
        "p99_staleness_s": ((stale.get("staleness_s") or {}).get("p99") or 0.0) if consistency else None,
        "ryw_violations": (findings.get("read_your_writes") or {}).get("count"),
        "lost_writes": (findings.get("lost_writes") or {}).get("count")
        if (findings.get("lost_writes") or {}).get("checked") else None,
        "counter_lost": (counters.get("lost") or {}).get("count") if counters.get("checked") else None,
        "counter_duplicated": (counters.get("duplicated") or {}).get("count") if counters.get("checked") else None,
        "revoked_granted": (findings.get("revoked_granted") or {}).get("count"),
        "anomalies": consistency.get("anomalies"),
    }
    for row in findings.get("consistency_nines") or []:
        if row.get("total"):
            headline[nines_metric(row["within_s"])] = "all" if row["all_consistent"] else row["nines"]
    return headline


def metric_info(name: str) -> MetricInfo:
    if name.startswith("nines_within_"):
        return MetricInfo(name.replace("_", " ").replace("nines within", "nines within"), "", "higher")
    return CATALOG.get(name, MetricInfo(name, "", "lower"))


def comparable(value) -> float | None:
    """A headline value as a number for comparisons: "all" nines is infinite."""
    if value == "all":
        return float("inf")
    if isinstance(value, bool) or value is None:
        return None
    return float(value) if isinstance(value, int | float) else None
