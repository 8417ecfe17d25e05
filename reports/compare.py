"""Deltas between runs: `compare_runs(baseline, candidate)` flags regressions; `winners` picks the best per metric."""

from __future__ import annotations

import math
from pathlib import Path

from cachestorm.reports.headline import CATALOG, comparable, metric_info

REGRESSION_RELATIVE = 0.10  # worse by more than 10% ...
ABSOLUTE_SLACK = {"ms": 0.5, "s": 0.05, "q/s": 1.0, "x": 0.1, "/1k reads": 0.1,  # ... and by more than this
                  "nines": 0.1}
RATIO_SLACK = {"error_rate": 0.001, "hit_ratio": 0.01}  # absolute points for fractions


def as_analysis(run) -> dict:
    """A run folder path or an already computed analysis dict."""
    if isinstance(run, dict):
        return run
    from cachestorm.reports.analysis import analyze_run

    return analyze_run(Path(run))


def metric_names(headlines: list[dict]) -> list[str]:
    """Catalog order first, then the nines rows, keeping only metrics some run measured."""
    names = [name for name in CATALOG if any(h.get(name) is not None for h in headlines)]
    # objects (db_ground_truth, baseline, recovery) are not figures: their numbers have rows of their own
    extra = sorted({name for h in headlines for name in h
                    if name not in CATALOG and h.get(name) is not None and not isinstance(h[name], dict)},
                   key=lambda n: (not n.startswith("nines_within_"), _nines_order(n), n))
    return names + extra


def compare_runs(a, b, *, threshold: float = REGRESSION_RELATIVE) -> dict:
    """Compare candidate `b` against baseline `a` (run folders or analysis dicts)."""
    baseline, candidate = as_analysis(a), as_analysis(b)
    ha, hb = baseline.get("headline") or {}, candidate.get("headline") or {}
    bounds = [set((x.get("headline_notes") or {}).get("at_least") or []) for x in (baseline, candidate)]
    rows = []
    for name in metric_names([ha, hb]):
        if all(_hidden(x, name) for x in (baseline, candidate)):
            continue  # another domain's figure (e.g. counters in two profiles runs)
        row = _compare_metric(name, ha.get(name), hb.get(name), threshold)
        if name in bounds[0] and name in bounds[1]:  # both "all reads consistent": the sizes differ, not the runs
            row["regression"] = row["improvement"] = False
        rows.append(row)
    return {
        "baseline": _label(baseline),
        "candidate": _label(candidate),
        "threshold": threshold,
        "metrics": rows,
        "regressions": [row["metric"] for row in rows if row["regression"]],
        "improvements": [row["metric"] for row in rows if row["improvement"]],
    }


def _compare_metric(name: str, raw_a, raw_b, threshold: float) -> dict:
    info = metric_info(name)
    va, vb = comparable(raw_a), comparable(raw_b)
    row = {"metric": name, "label": info.label, "unit": info.unit, "better": info.better,
           "baseline": raw_a, "candidate": raw_b, "delta": None, "relative": None,
           "judged": info.judged, "regression": False, "improvement": False}
    if va is None or vb is None or va == vb:
        return row
    finite = math.isfinite(va) and math.isfinite(vb)
    if finite:
        row["delta"] = vb - va
        row["relative"] = (vb - va) / abs(va) if va else None
    worse = vb > va if info.better == "lower" else vb < va
    slack = RATIO_SLACK.get(name, ABSOLUTE_SLACK.get(info.unit, 0.0))
    if name in RATIO_SLACK:  # already a fraction: compare in points, not relative to itself
        significant = not finite or abs(vb - va) > slack
    else:
        significant = not finite or (abs(vb - va) > slack and (row["relative"] is None or abs(row["relative"]) > threshold))
    # a count beside its rate, or a window's p99 beside its worst second: shown, never the verdict
    row["regression"] = info.judged and worse and significant
    row["improvement"] = info.judged and (not worse) and significant
    return row


def _hidden(analysis: dict, name: str) -> bool:
    na = ((analysis.get("headline_notes") or {}).get("not_applicable") or {}).get(name)
    return na is not None and not na["shown"]


def winners(headlines: list[dict]) -> dict[str, list[int]]:
    """Per metric, the indices of the runs with the best value (ties share the win)."""
    result = {}
    for name in metric_names(headlines):
        values = [comparable(h.get(name)) for h in headlines]
        present = [v for v in values if v is not None]
        if len(present) < 2 or len(set(present)) == 1:
            continue
        best = min(present) if metric_info(name).better == "lower" else max(present)
        result[name] = [n for n, v in enumerate(values) if v == best]
    return result


def _label(analysis: dict) -> str:
    run = analysis.get("run") or {}
    return str(run.get("label") or run.get("run_id") or "run")


def _nines_order(name: str) -> float:
    try:
        return float(name.removeprefix("nines_within_").removesuffix("s"))
    except ValueError:
        return math.inf
