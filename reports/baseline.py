"""A verdict on the baseline: was the system healthy before anything was injected?

The steady state is the `before` phase (the `steady` phase without faults), after the load's settle
period (reports/phases.py BASELINE_SETTLE_S) and without any second of a fault. Each figure is judged
against a limit stated here and written into the report beside it; one broken limit makes the baseline
unhealthy, and then the fault's figures do not say what the fault did (an overloaded system fails
without it).
"""

from __future__ import annotations

from cachestorm.reports.metrics import CounterSeries
from cachestorm.reports.phases import Phase

POOL_TIMEOUTS = "cachestorm_pool_timeouts_total"
DB_QUERIES = "cachestorm_db_queries_total"
# the most each figure may be in a healthy steady state
BASELINE_LIMITS = {
    "p99_ms": 1000.0,            # clients' p99 (the ready experiments' "p99 stays bounded" probe)
    "error_rate": 0.01,          # failed attempts ÷ attempts
    "pool_timeouts": 0,          # "no free DB connection" answers: the pool must not run dry unprovoked
    "db_slot_utilisation": 0.8,  # recompute time asked of the DB ÷ its slot time (--db-capacity × seconds)
}
MIN_SAMPLED_OPERATIONS = 100  # without the clients' counts: fewer sampled operations judge nothing
ADVICE = ("lower --rate, use a longer --ttl, give the DB more --db-capacity, or run `cachestorm capacity` "
          "to find the load where it breaks")


def judge_baseline(analysis: dict, metrics: CounterSeries, pg: CounterSeries, phases: list[Phase],
                   settings: dict) -> dict:
    """{healthy (null: nothing measured), settle_s, window, figures: {name: {value, limit, broke,
    source}}, broke: [name], sentence (plain words, null when healthy or unknown)}."""
    before = next((p for p in phases if p.kind == "before"), None)
    settle = next((p for p in phases if p.kind == "settle"), None)
    settle_s = round(settle.t_end - settle.t_start, 3) if settle else 0.0
    if before is None:
        return {"healthy": None, "settle_s": settle_s, "window": None, "figures": {}, "broke": [],
                "sentence": None}
    latency = analysis.get("latency") or {}
    figures = {
        "p99_ms": (((latency.get("by_phase") or {}).get(before.name) or {}).get("p99_ms"),
                   "latency.by_phase (clients)"),
        "error_rate": _error_rate(analysis, before),
        "pool_timeouts": (metrics.increase_within(POOL_TIMEOUTS, before.t_start, before.t_end)
                          if metrics.has(POOL_TIMEOUTS) else None, "cachestorm_pool_timeouts_total (targets)"),
        "db_slot_utilisation": _slot_utilisation(metrics, pg, before, settings),
    }
    judged = {}
    for name, (value, source) in figures.items():
        limit = BASELINE_LIMITS[name]
        judged[name] = {"value": value, "limit": limit, "broke": None if value is None else value > limit,
                        "source": source}
    broke = [name for name, figure in judged.items() if figure["broke"]]
    measured = [name for name, figure in judged.items() if figure["broke"] is not None]
    healthy = None if not measured else not broke
    return {"healthy": healthy, "settle_s": settle_s, "window": [before.t_start, before.t_end],
            "figures": judged, "broke": broke, "sentence": _sentence(judged, broke) if broke else None}


def _error_rate(analysis: dict, before: Phase) -> tuple[float | None, str]:
    """Failed attempts ÷ attempts over the clients' 1 s intervals that lie wholly in the phase: an
    interval the fault starts in (its middle may still be before it) is not the baseline's."""
    seconds = [c for c in (analysis.get("latency") or {}).get("counts_by_second") or []
               if before.t_start <= c["t"] and c["t"] + 1 <= before.t_end]
    attempts = sum(c.get("attempts_started", c.get("attempts", c.get("requests", 0))) for c in seconds)
    if attempts:
        failed = sum(c.get("timeouts", 0) + c.get("conn_errors", 0) + c.get("server_errors", 0) for c in seconds)
        return failed / attempts, "latency counts (failed attempts ÷ attempts, every request)"
    series = [p for p in (analysis.get("errors") or {}).get("series") or []
              if before.t_start <= p["t"] and p["t"] + 1 <= before.t_end]
    operations = sum(p.get("operations", 0) for p in series)
    if operations >= MIN_SAMPLED_OPERATIONS:
        return sum(p.get("errors", 0) for p in series) / operations, "histories (sampled keys)"
    return None, f"not measured (no latency counts; {operations} sampled operations, fewer than {MIN_SAMPLED_OPERATIONS})"


def _slot_utilisation(metrics: CounterSeries, pg: CounterSeries, before: Phase,
                      settings: dict) -> tuple[float | None, str]:
    """Recompute seconds asked of the DB ÷ the slot seconds it has: PostgreSQL's own count of the read
    queries (pg_stat_statements) × --recompute ÷ (--db-capacity × the seconds counted); over 1 the
    queue grows. None without a slot limit (--db-capacity 0) or a recompute cost."""
    capacity, recompute_ms = settings.get("db_capacity"), settings.get("recompute_ms")
    if not capacity or not recompute_ms:
        return None, "n/a (no --db-capacity slots or no recompute cost)"
    times = sorted(t for samples in pg.samples.values() for t, values in samples
                   if before.t_start <= t <= before.t_end and "read_calls" in values)
    if len(times) >= 2:
        reads = pg.increase_within("read_calls", times[0], times[-1])
        source = "PostgreSQL read calls (pg_stat_statements) × --recompute ÷ (--db-capacity × s)"
    else:
        times = sorted(t for samples in metrics.samples.values() for t, _ in samples
                       if before.t_start <= t <= before.t_end)
        if len(set(times)) < 2:
            return None, "not measured"
        times = [times[0], times[-1]]
        reads = metrics.increase_within(DB_QUERIES, times[0], times[-1], kind="read")
        source = "targets' executed reads × --recompute ÷ (--db-capacity × s)"
    span = times[-1] - times[0]
    return reads * float(recompute_ms) / 1000.0 / (float(capacity) * span), source


def _sentence(judged: dict, broke: list[str]) -> str:
    words = {"p99_ms": lambda v, lim: f"p99 {v:,.0f} ms (limit {lim:,.0f} ms)",
             "error_rate": lambda v, lim: f"error rate {v * 100:.1f}% (limit {lim * 100:g}%)",
             "pool_timeouts": lambda v, lim: f"{v:,.0f} pool timeouts (limit {lim:g})",
             "db_slot_utilisation": lambda v, lim: f"DB slots {v * 100:.0f}% busy (limit {lim * 100:g}%)"}
    parts = [words[name](judged[name]["value"], judged[name]["limit"]) for name in broke]
    return ("Unhealthy baseline: before any fault the system was already failing - " + ", ".join(parts) +
            ". The fault's figures of this run do not show what the fault did; " + ADVICE + ".")


def headline_baseline(baseline: dict) -> dict | None:
    """The headline's `baseline`: each figure's value, limit and whether it broke, and settle_s."""
    if not baseline or baseline.get("window") is None:
        return None
    out = {name: {"value": f["value"], "limit": f["limit"], "broke": f["broke"]}
           for name, f in (baseline.get("figures") or {}).items()}
    return out | {"settle_s": baseline.get("settle_s")}
