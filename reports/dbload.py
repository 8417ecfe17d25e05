"""DB load: queries/s over time (targets' counters and PostgreSQL's own), amplification per fault,
DB loads per hot-key expiry, and recovery time after each fault."""

from __future__ import annotations

import math
import statistics

from reports.metrics import CounterSeries
from reports.phases import FaultWindow, Phase, effect_end

DB_QUERIES = "cachestorm_db_queries_total"
KEY_RECOMPUTES = "cachestorm_key_recomputes_total"
RECOVERY_TOLERANCE = 0.10  # back within 10% of steady state
RECOVERY_SLACK = {"p99_ms": 1.0, "db": 1.0}  # absolute slack so a near-zero baseline can be met
RECOVERY_HOLD_S = 2  # the condition must hold this many consecutive seconds


def analyze_db(metrics: CounterSeries, pg: CounterSeries, phases: list[Phase], windows: list[FaultWindow],
               p99_series: list[tuple[int, float]], min_window_s: float = 5.0) -> dict:
    sources = {
        "target_reads": metrics.rate(DB_QUERIES, kind="read") if metrics.has(DB_QUERIES) else [],
        "target_all": metrics.rate(DB_QUERIES) if metrics.has(DB_QUERIES) else [],
        "pg_calls": pg.rate("calls") if pg.has("calls") else [],
        "pg_xact_commit": pg.rate("xact_commit") if pg.has("xact_commit") else [],
    }
    # headline: what the targets say they read, else PostgreSQL's statement calls, else its commits
    headline = next((name for name in ("target_reads", "pg_calls", "pg_xact_commit") if sources[name]), None)
    main = sources[headline] if headline else []
    before = [phase for phase in phases if phase.kind == "before"]
    steady = _median([v for t, v in main if any(p.contains_second(t) for p in before)])
    steady_p99 = _median([v for t, v in p99_series if any(p.contains_second(t) for p in before)])
    faults = []
    for window in windows:
        start, end = window.t_start, effect_end(window, min_window_s)
        peak = max((v for t, v in main if start - 0.5 <= t < end - 0.5), default=None)
        entry = {
            "fault": window.name, "t_start": window.t_start, "t_end": window.t_end,
            "peak_queries_per_s": peak,
            "amplification": _ratio(peak, steady),
            "recovery_s": recovery_time(window.t_end, p99_series, main, steady_p99, steady,
                                        until=_next_start(windows, window)),
            # the same fault seen by every source: PostgreSQL's own counters are the ground truth
            "by_source": {name: _amplification(series, before, start, end)
                          for name, series in sources.items() if series},
        }
        if window.expired_keys:
            entry["hot_key_expiry"] = _hot_key_expiry(metrics, window, start, end)
        faults.append(entry)
    amplifications = [f["amplification"] for f in faults if f["amplification"] is not None]
    per_expiry = [f["hot_key_expiry"]["db_reads_per_key"] for f in faults
                  if f.get("hot_key_expiry") and f["hot_key_expiry"]["db_reads_per_key"] is not None]
    recoveries = [f["recovery_s"] for f in faults]
    return {
        "source": headline,
        "steady_queries_per_s": steady,
        "steady_p99_ms": steady_p99,
        # the peak of the faults' effect windows; the whole run's (warm-up included) without faults
        "peak_queries_per_s": max((f["peak_queries_per_s"] for f in faults if f["peak_queries_per_s"] is not None),
                                  default=None) if faults else max((v for _, v in main), default=None),
        "amplification": max(amplifications) if amplifications else None,
        "db_loads_per_expiry": max(per_expiry) if per_expiry else None,
        "recovery_s": None if not recoveries or None in recoveries else max(recoveries),
        "faults": faults,
        "series": {name: [{"t": t, "per_s": round(v, 3)} for t, v in values] for name, values in sources.items()},
    }


def _amplification(series: list[tuple[int, float]], before: list[Phase], start: float, end: float) -> dict:
    steady = _median([v for t, v in series if any(p.contains_second(t) for p in before)])
    peak = max((v for t, v in series if start - 0.5 <= t < end - 0.5), default=None)
    return {"steady_per_s": steady, "peak_per_s": peak, "amplification": _ratio(peak, steady)}


def _hot_key_expiry(metrics: CounterSeries, window: FaultWindow, start: float, end: float) -> dict:
    keys = window.expired_keys or 0
    reads = metrics.increase(DB_QUERIES, start, end, kind="read", key_class="hot")
    recomputes = metrics.increase(KEY_RECOMPUTES, start, end)
    return {"keys_expired": keys, "window_s": end - start, "db_reads": reads, "recomputes": recomputes,
            "db_reads_per_key": _ratio(reads, keys), "recomputes_per_key": _ratio(recomputes, keys)}


def recovery_time(t_end: float, p99_series: list[tuple[int, float]], db_series: list[tuple[int, float]],
                  steady_p99: float | None, steady_db: float | None, until: float = math.inf) -> float | None:
    """Seconds from the fault's end until p99 and DB load are back within 10% of steady state
    (holding for RECOVERY_HOLD_S seconds); None if they never are before `until` or the data ends."""
    p99 = dict(p99_series) if steady_p99 is not None else {}
    db = dict(db_series) if steady_db is not None else {}
    if not p99 and not db:
        return None
    seconds = sorted(s for s in set(p99) | set(db) if t_end - 1 < s < until)

    def settled(second: int) -> bool:
        ok_p99 = second not in p99 or p99[second] <= steady_p99 * (1 + RECOVERY_TOLERANCE) + RECOVERY_SLACK["p99_ms"]
        ok_db = second not in db or db[second] <= steady_db * (1 + RECOVERY_TOLERANCE) + RECOVERY_SLACK["db"]
        return ok_p99 and ok_db

    for n, second in enumerate(seconds):
        hold = seconds[n:n + RECOVERY_HOLD_S]
        if len(hold) == RECOVERY_HOLD_S and all(settled(s) for s in hold):
            return max(0.0, round(second - t_end, 3))
    return None


def _next_start(windows: list[FaultWindow], window: FaultWindow) -> float:
    later = [w.t_start for w in windows if w.t_start > window.t_start]
    return min(later) if later else math.inf


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator
