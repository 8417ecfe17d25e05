"""Capacity from an open-model `step` run: per step offered vs achieved rate, p50/p99, errors, DB load; the knee.

Reads only the run folder. The steps come from the step plan the run recorded when it started;
their windows from the load start and the hold. Locust needs a moment to boot after the conductor
records the load start, so the load start is the later of the journal's `load` record and the first
second with latency data. The first `TRANSITION_S` of every step is skipped (the previous step's
requests are still completing), and only whole latency seconds inside a step count.

The knee is the last step of the unbroken run of passing steps from the first one: a step passes when
its p99 <= the SLO, its error rate <= the maximum, and it achieved >= 95% of the offered rate.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from cachestorm.reports.latency import finite_float, new_histogram, summarize
from cachestorm.reports.metrics import CounterSeries
from hdrh.histogram import HdrHistogram

from cachestorm.core.runfiles import read_jsonl
from cachestorm.core.runfolder import RunFolder

SCHEMA = "cachestorm-capacity/1"
TRANSITION_S = 1.0
MIN_ACHIEVED_FRACTION = 0.95
_EPS = 1e-6
# name in a step -> (scrape file, counter, labels); PostgreSQL's counters are the ground truth
DB_SERIES = {
    "db_queries_per_1k": ("metrics", "cachestorm_db_queries_total", {}),
    "db_reads_per_1k": ("metrics", "cachestorm_db_queries_total", {"kind": "read"}),
    "pg_calls_per_1k": ("pg", "calls", {}),
    "pg_xact_commit_per_1k": ("pg", "xact_commit", {}),
}


def analyze_capacity(run_dir: str | Path, slo_p99_ms: float, max_error_rate: float) -> dict:
    """Steps (offered, sent, achieved, p50/p99, error rate, DB load per 1,000 requests) and the knee."""
    folder = RunFolder.existing(run_dir)
    run_dir = folder.path
    run = folder.meta()
    settings = run.get("settings") or {}
    max_rate, levels, hold = folder.step_plan()
    seconds = _latency_seconds(folder)
    journal_start = next((float(r["t_start"]) for r in folder.journal_records()
                          if r.get("kind") == "load" and r.get("t_start") is not None), None)
    first_data = min(seconds, default=None)
    load_start = max(t for t in (journal_start, first_data, 0.0) if t is not None)
    errors = _error_counter(folder, run)
    metrics = CounterSeries.from_metrics(folder.iter_metrics())
    pg = CounterSeries.from_pg_stats(folder.pg_stats())
    steps = []
    for index, level in enumerate(levels):
        begin = load_start + index * hold + TRANSITION_S
        end = load_start + (index + 1) * hold
        steps.append(_step(index, level * max_rate, begin, end, seconds, errors, metrics, pg,
                           slo_p99_ms, max_error_rate))
    knee, first_failure = None, None
    for step in steps:
        if not step["passed"]:
            first_failure = step
            break
        knee = step
    if knee is not None:
        note = (f"knee at step {knee['step'] + 1}: {_num(knee['achieved_per_s'])} req/s achieved "
                f"(offered {_num(knee['offered_per_s'])}/s), p99 {_num(knee['p99_ms'])} ms")
        note += (f"; step {first_failure['step'] + 1} failed: {'; '.join(first_failure['reasons'])}"
                 if first_failure else "; every step passed: capacity is above the highest offered rate")
    else:
        note = f"no knee: even the first step failed ({'; '.join(first_failure['reasons'])})"
    return {
        "schema": SCHEMA,
        "run": {"run_id": run.get("run_id") or run_dir.name, "label": run.get("label") or run_dir.name,
                "strategy": settings.get("strategy"), "domain": settings.get("domain"), "path": str(run_dir)},
        "plan": {"max_rate": max_rate, "steps": len(levels), "hold_s": hold, "levels": levels},
        "slo": {"p99_ms": slo_p99_ms, "max_error_rate": max_error_rate,
                "min_achieved_fraction": MIN_ACHIEVED_FRACTION, "transition_s": TRANSITION_S},
        "load_start_t": load_start,
        "load_start_source": "latency" if first_data is not None and load_start == first_data else "journal",
        "error_rate_source": errors.source,
        "steps": steps,
        "knee": knee,
        "first_failure": None if first_failure is None else {"step": first_failure["step"],
                                                               "reasons": first_failure["reasons"]},
        "note": note,
    }


def _step(index: int, offered: float, begin: float, end: float, seconds: dict, errors, metrics: CounterSeries,
          pg: CounterSeries, slo_p99_ms: float, max_error_rate: float) -> dict:
    # whole latency seconds [t, t + 1) inside [begin, end]
    inside = [t for t in seconds if t >= begin - _EPS and t + 1 <= end + _EPS]
    histogram = new_histogram()
    counts: dict[str, float] = defaultdict(float)
    for t in inside:
        histogram.add(seconds[t][0])
        for name, n in seconds[t][1].items():
            counts[name] += n
    latency = summarize(histogram) or {}
    window = (min(inside), max(inside) + 1) if inside else (begin, end)
    span = window[1] - window[0] if inside else 0.0
    requests = counts.get("requests") or histogram.get_total_count()
    error_rate, error_count = errors.rate(*window)
    step = {
        "step": index, "offered_per_s": offered, "t_start": window[0], "t_end": window[1], "seconds": len(inside),
        "requests": int(requests),
        "sent_per_s": counts["sent"] / span if span and "sent" in counts else None,
        "achieved_per_s": requests / span if span else None,
        "p50_ms": latency.get("p50_ms"), "p90_ms": latency.get("p90_ms"), "p99_ms": latency.get("p99_ms"),
        "max_ms": latency.get("max_ms"), "errors": error_count, "error_rate": error_rate,
        "late": int(counts["late"]) if "late" in counts else None,
        "dropped": int(counts["dropped"]) if "dropped" in counts else None,
    }
    for field, (source, name, labels) in DB_SERIES.items():
        # DB queries per second over (nearly) the same window as the achieved requests per second
        series = metrics if source == "metrics" else pg
        rate = _rate(series, name, window, labels) if step["achieved_per_s"] and series.has(name, **labels) else None
        step[field] = None if rate is None else 1000.0 * rate / step["achieved_per_s"]
    step["db_per_1k"] = next((step[f] for f in DB_SERIES if step[f] is not None), None)
    step["db_per_1k_source"] = next((f for f in DB_SERIES if step[f] is not None), None)
    step["reasons"] = _failures(step, slo_p99_ms, max_error_rate)
    step["passed"] = not step["reasons"]
    return step


def _failures(step: dict, slo_p99_ms: float, max_error_rate: float) -> list[str]:
    if not step["seconds"] or not step["requests"]:
        return ["no requests completed in the step's window"]
    reasons = []
    if step["p99_ms"] is None or step["p99_ms"] > slo_p99_ms:
        reasons.append(f"p99 {_num(step['p99_ms'])} ms > {_num(slo_p99_ms)} ms")
    if step["error_rate"] is None:
        reasons.append("error rate not measured")
    elif step["error_rate"] > max_error_rate:
        reasons.append(f"error rate {step['error_rate']:.4f} > {max_error_rate:g}")
    if step["achieved_per_s"] < MIN_ACHIEVED_FRACTION * step["offered_per_s"]:
        reasons.append(f"achieved {_num(step['achieved_per_s'])}/s < {MIN_ACHIEVED_FRACTION:.0%} of offered "
                       f"{_num(step['offered_per_s'])}/s")
        sent = step.get("sent_per_s")
        if sent is not None and sent < MIN_ACHIEVED_FRACTION * step["offered_per_s"]:
            reasons.append(f"the load generator sent only {_num(sent)}/s")
    return reasons


def _num(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _latency_seconds(folder: RunFolder) -> dict[float, tuple[HdrHistogram, dict]]:
    """t -> (merged `all` histogram, summed counts) per latency second (merged.jsonl, else per worker)."""
    seconds: dict[float, tuple[HdrHistogram, dict]] = {}
    for path in folder.latency_files():
        for record in read_jsonl(path):
            if record.get("kind", "all") != "all" or record.get("t") is None or not record.get("hist"):
                continue
            t = round(float(record["t"]), 3)
            if t not in seconds:
                seconds[t] = (new_histogram(), defaultdict(float))
            histogram, counts = seconds[t]
            histogram.add(HdrHistogram.decode(record["hist"]))
            for name, n in (record.get("counts") or {}).items():
                if isinstance(n, int | float):
                    counts[name] += n
    return seconds


def _rate(series: CounterSeries, name: str, window: tuple[float, float], labels: dict) -> float | None:
    """Counter increase per second over the scrape intervals that lie wholly inside the window.

    A scrape interval straddling a step boundary mixes two rates, so it is left out; only when no
    interval fits (a very short step) are the overlapping ones prorated.
    """
    start, end = window
    inside = [(t0, t1, inc) for t0, t1, inc in series._steps(name, labels)
              if t0 >= start - _EPS and t1 <= end + _EPS]
    if inside:
        return sum(inc for _, _, inc in inside) / sum(t1 - t0 for t0, t1, _ in inside)
    total = 0.0
    for t0, t1, increase in series._steps(name, labels):
        overlap = min(t1, end) - max(t0, start)
        if overlap > 0:
            total += increase * overlap / (t1 - t0)
    return total / (end - start) if end > start else None


class _ErrorCounter:
    """Failures and requests between two times: Locust's cumulative per-second totals, else the histories."""

    def __init__(self, source: str | None, points: list[tuple[float, float, float]]):
        self.source = source
        self.points = points  # (t, requests, failures), cumulative for Locust, per operation for histories

    def rate(self, start: float, end: float) -> tuple[float | None, int | None]:
        if self.source == "locust":
            before, after = self._at(start), self._at(end)
            requests, failures = after[0] - before[0], after[1] - before[1]
        elif self.source == "histories":
            inside = [p for p in self.points if start <= p[0] < end]
            requests, failures = len(inside), sum(p[2] for p in inside)
        else:
            return None, None
        return (failures / requests if requests > 0 else None), int(failures)

    def _at(self, t: float) -> tuple[float, float]:
        latest = (0.0, 0.0)
        for stamp, requests, failures in self.points:
            if stamp > t + _EPS:
                break
            latest = (requests, failures)
        return latest


def _error_counter(folder: RunFolder, run: dict) -> _ErrorCounter:
    started_at = run.get("started_at")
    rows = [r for r in folder.locust_csv("stats_history") if r.get("Name") == "Aggregated"]
    points = []
    for row in rows:
        stamp, requests, failures = (finite_float(row.get(c)) for c in ("Timestamp", "Total Request Count",
                                                                  "Total Failure Count"))
        if None not in (stamp, requests, failures) and started_at is not None:
            points.append((stamp - started_at, requests, failures))
    if points:
        return _ErrorCounter("locust", sorted(points))
    from cachestorm.reports.history import read_run_history

    t0_ns = run.get("t0_monotonic_ns")
    history = read_run_history(folder.path) if t0_ns is not None else None
    operations = [] if history is None else [
        ((start_ns - t0_ns) / 1e9, 1.0, 1.0 if _is_error(status) else 0.0)
        for start_ns, status in zip(history.start_ns, history.status, strict=True)]
    return _ErrorCounter("histories" if operations else None, sorted(operations))


def _is_error(status) -> bool:
    text = str(status)
    if not text.isdigit():
        return True  # timeout, conn_error
    code = int(text)
    return code >= 500 or (400 <= code < 500 and code != 404)

