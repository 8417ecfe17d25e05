"""The headline numbers of a run (report.json `headline`): what the gate, comparisons and tables use.

`CATALOG` says, per metric, its label, unit and which direction is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cachestorm.reports.baseline import headline_baseline


@dataclass(frozen=True)
class MetricInfo:
    label: str
    unit: str
    better: str  # "lower" | "higher"
    # False: shown beside a better figure that decides comparisons (a count beside its rate, a
    # window's p99 beside its worst second); compare never calls it a regression
    judged: bool = True
    domain: str | None = None  # the only domain where the figure applies (others: n/a, row hidden)


CATALOG: dict[str, MetricInfo] = {
    "baseline_healthy": MetricInfo("baseline healthy (before any fault)", "", "higher"),
    "requests": MetricInfo("requests", "", "higher", judged=False),
    "p50_ms": MetricInfo("p50", "ms", "lower"),
    "p99_ms": MetricInfo("p99", "ms", "lower"),
    "p999_ms": MetricInfo("p99.9", "ms", "lower"),
    "max_ms": MetricInfo("max latency", "ms", "lower"),
    "p99_ms_before_fault": MetricInfo("p99 before fault", "ms", "lower"),
    "p99_ms_during_fault": MetricInfo("p99 over the fault windows", "ms", "lower", judged=False),
    "p99_ms_fault_worst_second": MetricInfo("p99 of the worst second during the fault", "ms", "lower"),
    "p999_ms_fault_worst_second": MetricInfo("p99.9 of the worst second during the fault", "ms", "lower"),
    "error_rate": MetricInfo("error rate", "", "lower"),
    "errors": MetricInfo("errors", "", "lower", judged=False),
    "timeouts": MetricInfo("timeouts", "", "lower", judged=False),
    "timeouts_during_fault": MetricInfo("client timeouts during fault", "", "lower"),
    "pool_timeouts": MetricInfo("pool timeouts", "", "lower"),
    "pool_timeouts_during_fault": MetricInfo("pool timeouts during fault", "", "lower"),
    "attempts_per_request_during_fault": MetricInfo("attempts per request during fault", "", "lower"),
    "db_p99_ms_before_fault": MetricInfo("DB query p99 before fault", "ms", "lower"),
    "db_p99_ms_during_fault": MetricInfo("DB query p99 during fault", "ms", "lower"),
    "recovered_on_its_own": MetricInfo("recovered on its own", "", "higher"),
    "time_to_recover_s": MetricInfo("time to recover", "s", "lower"),
    "db_second_wave_peak_reads_per_s": MetricInfo("DB peak of the second expiry wave", "q/s", "lower"),
    "attempts_per_request": MetricInfo("attempts per request", "", "lower"),
    "db_amplification": MetricInfo("DB amplification (peak ÷ max(steady, 1 q/s))", "x", "lower"),
    "db_peak_queries_per_s": MetricInfo("DB peak (executed)", "q/s", "lower"),
    "db_peak_attempts_per_s": MetricInfo("DB peak of attempts (refused at the pool too)", "q/s", "lower",
                                         judged=False),
    "db_steady_queries_per_s": MetricInfo("DB steady", "q/s", "lower"),
    "db_loads_per_expiry": MetricInfo("DB loads per hot-key expiry (executed)", "", "lower"),
    "db_load_attempts_per_expiry": MetricInfo("DB load attempts per hot-key expiry (refused at the pool too)", "",
                                              "lower", judged=False),
    "recovery_s": MetricInfo("recovery", "s", "lower"),
    "hit_ratio": MetricInfo("hit ratio", "", "higher"),
    "stale_serves": MetricInfo("stale serves", "", "lower", judged=False),
    "reads_within_bound": MetricInfo("reads within the promised staleness bound", "", "higher"),
    "stale_reads_over_bound_per_1k": MetricInfo("stale reads beyond the bound per 1,000 reads", "/1k reads", "lower"),
    "stale_reads_per_1k": MetricInfo("stale reads per 1,000 reads", "/1k reads", "lower"),
    "stale_reads": MetricInfo("stale reads", "", "lower", judged=False),
    "stale_reads_over_bound": MetricInfo("stale reads over bound", "", "lower", judged=False),
    "max_staleness_s": MetricInfo("max staleness", "s", "lower"),
    "p99_staleness_s": MetricInfo("p99 staleness", "s", "lower"),
    "ryw_violations_per_1k": MetricInfo("read-your-writes violations per 1,000 own reads", "/1k reads", "lower"),
    "ryw_violations": MetricInfo("read-your-writes violations", "", "lower", judged=False),
    "lost_writes": MetricInfo("lost writes", "", "lower"),  # acknowledged writes + counter increments
    "counter_lost": MetricInfo("counters with lost increments", "", "lower", domain="counters"),
    "counter_duplicated": MetricInfo("counters with duplicated increments", "", "lower", domain="counters"),
    "revoked_granted": MetricInfo("granted after revoke (checker)", "", "lower", domain="permissions"),
    "target_permission_violations": MetricInfo("granted after revoke (targets' own count)", "", "lower",
                                               judged=False, domain="permissions"),
    "lease_refused": MetricInfo("lease-refused fills", "", "lower", judged=False),
    "anomalies": MetricInfo("broken promises (consistency)", "", "lower"),
}
RATE_PER = 1000  # "per 1,000 reads": runs of different sizes compare as rates


def nines_metric(within_s: float) -> str:
    return f"nines_within_{within_s:g}s"


def build_headline(analysis: dict) -> dict:
    latency = analysis.get("latency") or {}
    overall = latency.get("overall") or {}
    during = latency.get("during_fault") or {}
    worst = latency.get("during_fault_worst_second") or {}
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
    ryw = findings.get("read_your_writes") or {}
    counters = findings.get("counters") or {}
    promise = consistency.get("promise") or {}
    recovery = db.get("recovery")
    baseline = analysis.get("baseline") or {}
    truth = db.get("ground_truth")
    headline = {
        "baseline_healthy": baseline.get("healthy"),
        # every logical request (latency counts), else the HDR count, else the (sampled) histories
        "requests": (latency.get("counts") or {}).get("requests") or overall.get("count") or errors.get("operations"),
        "p50_ms": overall.get("p50_ms"),
        "p99_ms": overall.get("p99_ms"),
        "p999_ms": overall.get("p999_ms"),
        "max_ms": overall.get("max_ms"),
        "p99_ms_before_fault": before.get("p99_ms"),
        "p99_ms_during_fault": during.get("p99_ms"),
        "p99_ms_fault_worst_second": worst.get("p99_ms"),
        "p999_ms_fault_worst_second": worst.get("p999_ms"),
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
        # the run's one recovery (db.recovery, docs/report-schema.md "Recovery"): the same value in all three
        "recovered_on_its_own": (recovery or {}).get("recovered"),
        "time_to_recover_s": (recovery or {}).get("time_s"),
        "db_second_wave_peak_reads_per_s": max((w["second_wave_peak_reads_per_s"] for w in incident.get("expiry_waves") or []
                                                 if w["second_wave_peak_reads_per_s"] is not None), default=None),
        "attempts_per_request": errors.get("attempts_per_request"),
        "db_amplification": db.get("amplification"),
        "db_peak_queries_per_s": db.get("peak_queries_per_s"),
        "db_peak_attempts_per_s": db.get("peak_attempts_per_s"),
        "db_steady_queries_per_s": db.get("steady_queries_per_s"),
        "db_loads_per_expiry": db.get("db_loads_per_expiry"),
        "db_load_attempts_per_expiry": db.get("db_load_attempts_per_expiry"),
        "recovery_s": (recovery or {}).get("time_s"),
        "hit_ratio": cache.get("hit_ratio"),
        "stale_serves": cache.get("stale_serves") if cache.get("available") else None,
        "reads_within_bound": promise.get("fraction_within"),
        "stale_reads_over_bound_per_1k": _per_1k(stale.get("over_bound"), stale.get("reads")),
        "stale_reads_per_1k": _per_1k(stale.get("count"), stale.get("reads")) if consistency else None,
        "stale_reads": stale.get("count") if consistency else None,
        "stale_reads_over_bound": stale.get("over_bound"),
        "max_staleness_s": ((stale.get("staleness_s") or {}).get("max") or 0.0) if consistency else None,
        "p99_staleness_s": ((stale.get("staleness_s") or {}).get("p99") or 0.0) if consistency else None,
        "ryw_violations_per_1k": _per_1k(ryw.get("count"), ryw.get("reads_checked")),
        "ryw_violations": ryw.get("count"),
        "lost_writes": lost_writes(findings),
        "counter_lost": (counters.get("lost") or {}).get("count") if counters.get("checked") else None,
        "counter_duplicated": (counters.get("duplicated") or {}).get("count") if counters.get("checked") else None,
        "revoked_granted": (findings.get("revoked_granted") or {}).get("count"),
        "target_permission_violations": cache.get("permission_violations"),
        "lease_refused": cache.get("lease_refused"),
        "anomalies": consistency.get("anomalies"),
    }
    # objects, not figures (compare and the tables skip them): PostgreSQL's word on the DB figures,
    # the baseline's verdict figure by figure, and the one recovery
    headline["db_ground_truth"] = None if not truth else {
        "source": truth.get("source"), "pg_count": truth.get("pg_count"),
        "targets_count": truth.get("target_queries"), "agrees": bool(truth.get("agree"))}
    headline["baseline"] = headline_baseline(baseline)
    headline["recovery"] = None if recovery is None else {
        name: recovery.get(name) for name in ("recovered", "time_s", "within_s", "last_signal")}
    for row in findings.get("consistency_nines") or []:
        if row.get("total"):
            # a number of nines; all consistent: the most this many reads can show (an "at least")
            headline[nines_metric(row["within_s"])] = (row["nines_lower_bound"] if row["all_consistent"]
                                                       else row["nines"])
    return headline


def lost_writes(findings: dict) -> int | None:
    """Every acknowledged write PostgreSQL does not hold, in operations: versioned writes above the final
    version plus counter increments lost (`counters.lost.increments`); None when neither was checked."""
    writes, counters = findings.get("lost_writes") or {}, findings.get("counters") or {}
    parts = [writes.get("count", 0) if writes.get("checked") else None,
             (counters.get("lost") or {}).get("increments", 0) if counters.get("checked") else None]
    parts = [p for p in parts if p is not None]
    return sum(parts) if parts else None


def headline_notes(analysis: dict) -> dict:
    """What a bare number cannot say: `not_applicable` {metric: {why, shown}} (shown false: the row
    belongs to another domain and is left out of reports), `at_least` (nines of all-consistent reads,
    a lower bound), and `disagreements` (sources that should agree but do not)."""
    run = analysis.get("run") or {}
    domain = run.get("domain")
    faults = analysis.get("faults") or []
    not_applicable = {}
    for name, info in CATALOG.items():
        if info.domain and domain and info.domain != domain:
            not_applicable[name] = {"why": f"{info.domain} domain only", "shown": False}
    if not faults:
        for name in ("p99_ms_before_fault", "p99_ms_during_fault", "p99_ms_fault_worst_second",
                     "p999_ms_fault_worst_second", "db_amplification", "db_loads_per_expiry",
                     "db_load_attempts_per_expiry", "recovery_s"):
            not_applicable[name] = {"why": "no fault in this run", "shown": True}
    elif not any((f.get("hot_key_expiry") or {}) for f in (analysis.get("db") or {}).get("faults") or []):
        not_applicable["db_loads_per_expiry"] = {"why": "no hot-key expiry in this run", "shown": True}
        not_applicable["db_load_attempts_per_expiry"] = {"why": "no hot-key expiry in this run", "shown": True}
    at_least = [nines_metric(row["within_s"]) for row in
                ((analysis.get("consistency") or {}).get("findings") or {}).get("consistency_nines") or []
                if row.get("total") and row.get("all_consistent")]
    return {"not_applicable": not_applicable, "at_least": at_least, "disagreements": disagreements(analysis)}


def disagreements(analysis: dict) -> list[str]:
    """Two sources of one truth that differ beyond their tolerance, each as one sentence."""
    found = []
    truth = (analysis.get("db") or {}).get("ground_truth") or {}
    if truth and not truth.get("agree"):
        found.append(truth["note"])
    headline = analysis.get("headline") or {}
    checker, target = headline.get("revoked_granted"), headline.get("target_permission_violations")
    if checker is not None and target is not None and (checker == 0) != (target == 0):
        found.append(f"granted after revoke: the checker found {checker:,} but the targets counted {target:,.0f} "
                     "(same bound; the targets check only keys whose revoke they recorded)")
    return found


def shown_metrics(analysis: dict) -> list[str]:
    """The headline rows a report of this run shows (rows of other domains left out)."""
    from cachestorm.reports.compare import metric_names

    names = metric_names([analysis.get("headline") or {}])
    names += [n for n, na in ((analysis.get("headline_notes") or {}).get("not_applicable") or {}).items()
              if na["shown"] and n not in names]
    return [n for n in sorted(names, key=_catalog_order) if display(analysis, n) is not None]


def _catalog_order(name: str) -> tuple[int, float]:
    order = list(CATALOG)
    if name in order:
        return order.index(name), 0.0
    try:  # nines rows by their M
        return len(order), float(name.removeprefix("nines_within_").removesuffix("s"))
    except ValueError:
        return len(order) + 1, 0.0


def lead(analysis: dict) -> list[str]:
    """The sentences a report starts with: an unhealthy baseline first, then the promise and whether it
    held, then any disagreement."""
    promise = (analysis.get("consistency") or {}).get("promise") or {}
    unhealthy = (analysis.get("baseline") or {}).get("sentence")
    lines = [unhealthy] if unhealthy else []
    lines += [promise["text"]] if promise.get("text") else []
    return lines + list((analysis.get("headline_notes") or {}).get("disagreements") or [])


def display(analysis: dict, name: str) -> str | None:
    """A headline figure as a report shows it; None: leave the row out (it belongs to another domain)."""
    notes = analysis.get("headline_notes") or {}
    na = (notes.get("not_applicable") or {}).get(name)
    if na is not None:
        return f"n/a ({na['why']})" if na["shown"] else None
    value = (analysis.get("headline") or {}).get(name)
    if name in RECOVERY_METRICS and (analysis.get("headline") or {}).get("recovery") is not None:
        return recovery_text((analysis.get("headline") or {})["recovery"], name)
    if name == "baseline_healthy" and value is not None:
        return "yes" if value else "no: " + ", ".join(
            n for n, f in ((analysis.get("headline") or {}).get("baseline") or {}).items()
            if isinstance(f, dict) and f.get("broke"))
    if value is None:
        return "not measured"
    info = metric_info(name)
    if name.startswith("nines_within_"):
        prefix = "≥ " if name in (notes.get("at_least") or []) else ""
        return f"{prefix}{value:.2f} nines"
    if name == "reads_within_bound":
        return f"{value * 100:.2f}%"
    return format_number(value, info.unit)


RECOVERY_METRICS = ("recovered_on_its_own", "time_to_recover_s", "recovery_s")


def recovery_text(recovery: dict | None, name: str = "time_to_recover_s") -> str:
    """The run's one recovery in words, the same wherever it is shown: "4.1 s" (a yes/no row:
    "yes, 4.1 s"), "not recovered within 9 s (last signal: p99_ms)", or "not judged"."""
    if not recovery or recovery.get("recovered") is None:
        left = (recovery or {}).get("within_s")
        return "not judged" + (f" (only {left:g} s left)" if left is not None else "")
    if recovery["recovered"]:
        time = f"{recovery['time_s']:.3g} s"
        return f"yes, {time}" if name == "recovered_on_its_own" else time
    return (f"not recovered within {recovery['within_s']:g} s"
            f" (last signal: {recovery.get('last_signal') or 'none'})")


def format_number(value, unit: str = "") -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "∞"
        if unit == "" and 0 < abs(value) < 1:
            text = f"{value:.4g}"
        elif value == int(value) and abs(value) < 1e15:
            text = f"{int(value):,}"
        else:
            text = f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    else:
        text = f"{value:,}"
    return f"{text} {unit}".strip()


def _per_1k(count, total) -> float | None:
    if count is None or not total:
        return None
    return count * RATE_PER / total


def metric_info(name: str) -> MetricInfo:
    if name.startswith("nines_within_"):
        return MetricInfo(name.replace("_", " ").replace("nines within", "nines within"), "nines", "higher")
    return CATALOG.get(name, MetricInfo(name, "", "lower"))


def comparable(value) -> float | None:
    """A headline value as a number for comparisons: "all" nines is infinite."""
    if value == "all":
        return float("inf")
    if isinstance(value, bool) or value is None:
        return None
    return float(value) if isinstance(value, int | float) else None
