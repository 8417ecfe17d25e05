"""Deltas between runs: `compare_runs(baseline, candidate)` flags regressions; `winners` picks the best per metric."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cachestorm.reports.headline import CATALOG, comparable, metric_info


# Beyond noise (docs/report-schema.md, "Comparison"): a difference counts only when it is larger than
# BOTH thresholds of its metric: `relative` (of the better of the two values) and `absolute` (in the
# metric's unit; fractions in points). Measured on 2 busy cores, repeated runs of one strategy differ by
# up to ~20 % in latency percentiles, a few ms in p50 and seconds in the worst staleness within a bound.
# One function, `judge`, applies it for `compare`, `--fail-on-regression` and the comparison pages' "best".
@dataclass(frozen=True)
class Noise:
    relative: float  # fraction of the better value
    absolute: float  # in the metric's unit


DEFAULT_NOISE = Noise(0.25, 0.0)
NOISE_BY_UNIT = {"ms": Noise(0.25, 10.0), "s": Noise(0.25, 1.0), "q/s": Noise(0.25, 2.0), "x": Noise(0.25, 2.0),
                 "/1k reads": Noise(0.25, 1.0), "nines": Noise(0.0, 0.3)}
NOISE: dict[str, Noise] = {
    "p50_ms": Noise(0.25, 2.0),
    "p999_ms": Noise(0.5, 50.0), "max_ms": Noise(0.5, 100.0),
    "p99_ms_fault_worst_second": Noise(0.25, 50.0), "p999_ms_fault_worst_second": Noise(0.5, 100.0),
    "error_rate": Noise(0.25, 0.002), "hit_ratio": Noise(0.0, 0.02), "reads_within_bound": Noise(0.0, 0.001),
    "pool_timeouts": Noise(0.25, 10.0), "pool_timeouts_during_fault": Noise(0.25, 10.0),
    "timeouts_during_fault": Noise(0.25, 5.0),
    "attempts_per_request": Noise(0.1, 0.05), "attempts_per_request_during_fault": Noise(0.1, 0.05),
    "db_loads_per_expiry": Noise(0.25, 0.5), "db_load_attempts_per_expiry": Noise(0.25, 0.5),
    "db_steady_queries_per_s": Noise(0.5, 2.0), "db_peak_queries_per_s": Noise(0.25, 5.0),
    "recovery_s": Noise(0.25, 2.0), "time_to_recover_s": Noise(0.25, 2.0),
    # the worst stale read within a declared bound is an extreme value: seconds of jitter are noise
    "max_staleness_s": Noise(0.5, 5.0), "p99_staleness_s": Noise(0.5, 5.0),
    # broken promises: any increase is a regression (counts from 0, one per 10,000 reads as a rate)
    "stale_reads_over_bound_per_1k": Noise(0.0, 0.1), "ryw_violations_per_1k": Noise(0.0, 0.1),
    "lost_writes": Noise(0.0, 0.0), "counter_lost": Noise(0.0, 0.0), "counter_duplicated": Noise(0.0, 0.0),
    "revoked_granted": Noise(0.0, 0.0), "anomalies": Noise(0.0, 0.0), "recovered_on_its_own": Noise(0.0, 0.0),
}


def noise(name: str) -> Noise:
    """The thresholds a difference of metric `name` must pass to be more than noise."""
    return NOISE.get(name) or NOISE_BY_UNIT.get(metric_info(name).unit, DEFAULT_NOISE)


def beyond_noise(name: str, a, b) -> bool:
    """Do headline values a and b of metric `name` differ by more than its noise (both thresholds)?"""
    va, vb = comparable(a), comparable(b)
    if va is None or vb is None or va == vb:
        return False
    if not (math.isfinite(va) and math.isfinite(vb)):
        return True  # "all reads consistent" against a number
    rule = noise(name)
    better = min(va, vb) if metric_info(name).better == "lower" else max(va, vb)
    difference = abs(vb - va)
    return difference > rule.absolute and difference > rule.relative * abs(better)


def judge(name: str, baseline, candidate) -> str | None:
    """"better", "worse" or None (equal, within noise, not comparable, or a figure compare does not judge)."""
    info = metric_info(name)
    if not info.judged or not beyond_noise(name, baseline, candidate):
        return None
    va, vb = comparable(baseline), comparable(candidate)
    worse = vb > va if info.better == "lower" else vb < va
    return "worse" if worse else "better"


def as_analysis(run) -> dict:
    """A run folder path or an already computed analysis dict."""
    if isinstance(run, dict):
        return run
    from cachestorm.reports.analysis import analyze_run

    return analyze_run(Path(run))


def metric_names(headlines: list[dict]) -> list[str]:
    """Catalog order first, then the nines rows, keeping only metrics some run measured."""
    names = [name for name in CATALOG if any(h.get(name) is not None for h in headlines)]
    extra = sorted({name for h in headlines for name in h if name not in CATALOG and _number(h.get(name))},
                   key=lambda n: (not n.startswith("nines_within_"), _nines_order(n), n))
    return names + extra


def _number(value) -> bool:
    """A flat headline figure (not the verdict's or the baseline's structured entries)."""
    return value == "all" or (isinstance(value, int | float) and not isinstance(value, bool))


def compare_runs(a, b) -> dict:
    """Compare candidate `b` against baseline `a` (run folders or analysis dicts)."""
    baseline, candidate = as_analysis(a), as_analysis(b)
    ha, hb = baseline.get("headline") or {}, candidate.get("headline") or {}
    bounds = [set((x.get("headline_notes") or {}).get("at_least") or []) for x in (baseline, candidate)]
    rows = []
    for name in metric_names([ha, hb]):
        if all(_hidden(x, name) for x in (baseline, candidate)):
            continue  # another domain's figure (e.g. counters in two profiles runs)
        row = _compare_metric(name, ha.get(name), hb.get(name))
        if name in bounds[0] and name in bounds[1]:  # both "all reads consistent": the sizes differ, not the runs
            row["regression"] = row["improvement"] = False
        rows.append(row)
    return {
        "baseline": _label(baseline),
        "candidate": _label(candidate),
        "rule": "beyond noise: docs/report-schema.md, Comparison (reports.compare.NOISE)",
        "metrics": rows,
        "regressions": [row["metric"] for row in rows if row["regression"]],
        "improvements": [row["metric"] for row in rows if row["improvement"]],
    }


def _compare_metric(name: str, raw_a, raw_b) -> dict:
    info = metric_info(name)
    va, vb = comparable(raw_a), comparable(raw_b)
    rule = noise(name)
    row = {"metric": name, "label": info.label, "unit": info.unit, "better": info.better,
           "baseline": raw_a, "candidate": raw_b, "delta": None, "relative": None,
           "noise": {"relative": rule.relative, "absolute": rule.absolute},
           "judged": info.judged, "regression": False, "improvement": False}
    if va is None or vb is None or va == vb:
        return row
    if math.isfinite(va) and math.isfinite(vb):
        row["delta"] = vb - va
        row["relative"] = (vb - va) / abs(va) if va else None
    # a count beside its rate, or a window's p99 beside its worst second: shown, never the verdict
    verdict = judge(name, raw_a, raw_b)
    row["regression"] = verdict == "worse"
    row["improvement"] = verdict == "better"
    return row


def _hidden(analysis: dict, name: str) -> bool:
    na = ((analysis.get("headline_notes") or {}).get("not_applicable") or {}).get(name)
    return na is not None and not na["shown"]


def winners(headlines: list[dict]) -> dict[str, list[int]]:
    """Per judged metric, the runs that are best beyond noise: no other run is better than them beyond
    noise, and they are better than at least one run beyond noise (so a tie within noise shares the
    win, and a metric where every run is within noise of the others has no winner)."""
    result = {}
    for name in metric_names(headlines):
        if not metric_info(name).judged:
            continue
        values = [h.get(name) for h in headlines]
        present = [n for n, v in enumerate(values) if comparable(v) is not None]
        if len(present) < 2:
            continue
        best = [n for n in present
                if not any(judge(name, values[n], values[m]) == "better" for m in present if m != n)
                and any(judge(name, values[n], values[m]) == "worse" for m in present if m != n)]
        if best:
            result[name] = best
    return result


def _label(analysis: dict) -> str:
    run = analysis.get("run") or {}
    return str(run.get("label") or run.get("run_id") or "run")


def _nines_order(name: str) -> float:
    try:
        return float(name.removeprefix("nines_within_").removesuffix("s"))
    except ValueError:
        return math.inf
