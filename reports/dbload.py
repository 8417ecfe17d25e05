"""DB load: queries/s over time (targets' counters and PostgreSQL's own), amplification per fault,
DB loads per hot-key expiry, and recovery time after each fault."""

from __future__ import annotations

import math
import statistics

from cachestorm.reports.metrics import CounterSeries
from cachestorm.reports.phases import FaultWindow, Phase, effect_end

DB_QUERIES = "cachestorm_db_queries_total"    # queries that ran (had a connection)
DB_ATTEMPTS = "cachestorm_db_attempts_total"  # fell through to the DB path, refused at the pool too
KEY_RECOMPUTES = "cachestorm_key_recomputes_total"
# A warm cache reads ~0 q/s in steady state, so peak ÷ steady would divide by zero: amplification is
# peak ÷ max(steady, this floor), i.e. how many times one query per second the fault cost.
STEADY_FLOOR_PER_S = 1.0
# Recovery: a second is back to normal when it is within the steady phase's own spread (its 95th
# percentile second) or within a floor of its median, whichever is higher; for 2 seconds in a row.
RECOVERY_QUANTILE = 0.95
RECOVERY_FLOOR = {"p99_ms": 5.0, "errors_per_s": 1.0, "db_queries_per_s": 2.0}
RECOVERY_HOLD_S = 2
# Ground truth: PostgreSQL's own count of the targets' read statements (pg_stat_statements, top-level
# calls of the read query in this database: counted when each ends, no reporting delay, no other
# client's statements) over the scraped span should equal the targets' executed reads over it, within
# this tolerance (reads in flight at either end of the span fit in it). Without pg_stat_statements:
# its transactions (commits + rollbacks), the scraper's own (one per sample) taken off, against all
# the targets' queries; an idle backend reports those up to 10 s late (PGSTAT_IDLE_INTERVAL), so what
# the targets counted before the first scrape (the warm-up) widens the accepted range upwards.
GROUND_TRUTH_TOLERANCE = 0.10
GROUND_TRUTH_SLACK = 20  # transactions


def analyze_db(metrics: CounterSeries, pg: CounterSeries, phases: list[Phase], windows: list[FaultWindow],
               p99_series: list[tuple[int, float]], min_window_s: float = 5.0,
               error_series: list[tuple[int, float]] | None = None, load_end_s: float | None = None,
               client_series: list[tuple[int, float]] | None = None) -> dict:
    """`load_end_s`: when the load was meant to end (what clients do while Locust stops is not judged);
    `client_series`: the clients' view per second, 0 healthy / 1 not (reports/incident.client_health)."""
    sources = {
        "target_reads": metrics.rate(DB_QUERIES, kind="read") if metrics.has(DB_QUERIES) else [],
        "target_read_attempts": metrics.rate(DB_ATTEMPTS, kind="read") if metrics.has(DB_ATTEMPTS) else [],
        "target_all": metrics.rate(DB_QUERIES) if metrics.has(DB_QUERIES) else [],
        "pg_reads": pg.rate("read_calls") if pg.has("read_calls") else [],
        "pg_calls": pg.rate("calls") if pg.has("calls") else [],
        "pg_xact_commit": pg.rate("xact_commit") if pg.has("xact_commit") else [],
    }
    truth = ground_truth(metrics, pg)
    # headline: the reads the targets executed, else PostgreSQL's count of them, else its statement
    # calls, else its commits; where the targets disagree with PostgreSQL, PostgreSQL's own series
    order = ("target_reads", "pg_reads", "pg_calls", "pg_xact_commit")
    if truth and not truth["agree"]:
        order = (truth["pg_series"],)
    headline = next((name for name in order if sources[name]), None)
    main = sources[headline] if headline else []
    attempts = sources["target_read_attempts"]
    before = [phase for phase in phases if phase.kind == "before"]
    steady = _median(_in(main, before))
    steady_p99 = _median(_in(p99_series, before))
    signals = {"p99_ms": p99_series, "errors_per_s": error_series or [], "db_queries_per_s": main}
    normal = {name: normal_limit(_in(series, before), RECOVERY_FLOOR[name]) for name, series in signals.items()}
    if client_series:  # healthy (0) or not (1): its limit is healthy, not the steady phase's spread
        signals["clients"], normal["clients"] = client_series, 0.0
    faults = []
    for window in windows:
        start, end = window.t_start, effect_end(window, min_window_s)
        peak = max((v for t, v in main if start - 0.5 <= t < end - 0.5), default=None)
        peak_attempts = max((v for t, v in attempts if start - 0.5 <= t < end - 0.5), default=None)
        idle = bool(p99_series) and not any(start - 1 < t < end for t, _ in p99_series)
        if idle:  # no request answered in the window (traffic not yet started): nothing was measured
            peak = peak_attempts = None
        until = min(_next_start(windows, window), math.inf if load_end_s is None else load_end_s)
        recovery = recovery_by_signal(window.t_end, signals, normal, until=until)
        entry = {
            "fault": window.name, "t_start": window.t_start, "t_end": window.t_end,
            "peak_queries_per_s": peak,
            "peak_attempts_per_s": peak_attempts,
            "amplification": amplification(peak, steady),
            "no_traffic": idle,
            "recovery_s": recovery["recovery_s"],
            "recovered_last": recovery["recovered_last"],
            "recovery_by_signal": recovery["by_signal"],
            "recovery": recovery_summary(window.t_end, until, recovery, _data_end(signals)),
            # the same fault seen by every source: PostgreSQL's own counters are the ground truth
            "by_source": {name: _amplification(series, before, start, end)
                          for name, series in sources.items() if series},
        }
        if window.expired_keys:
            entry["hot_key_expiry"] = _hot_key_expiry(metrics, pg, truth, window, start, end)
        faults.append(entry)
    amplifications = [f["amplification"] for f in faults if f["amplification"] is not None]
    per_expiry = [f["hot_key_expiry"]["db_reads_per_key"] for f in faults
                  if f.get("hot_key_expiry") and f["hot_key_expiry"]["db_reads_per_key"] is not None]
    attempts_per_expiry = [f["hot_key_expiry"]["db_read_attempts_per_key"] for f in faults
                           if f.get("hot_key_expiry") and f["hot_key_expiry"]["db_read_attempts_per_key"] is not None]
    # the run's one recovery: after its last fault (docs/report-schema.md, "Recovery")
    run_recovery = faults[-1]["recovery"] if faults else None
    return {
        "source": headline,
        "steady_queries_per_s": steady,
        "steady_floor_per_s": STEADY_FLOOR_PER_S,
        "steady_p99_ms": steady_p99,
        "normal_limits": normal,
        # the peak of the faults' effect windows; the whole run's (warm-up included) without faults
        "peak_queries_per_s": max((f["peak_queries_per_s"] for f in faults if f["peak_queries_per_s"] is not None),
                                  default=None) if faults else max((v for _, v in main), default=None),
        "peak_attempts_per_s": max((f["peak_attempts_per_s"] for f in faults if f["peak_attempts_per_s"] is not None),
                                   default=None) if faults else max((v for _, v in attempts), default=None),
        "amplification": max(amplifications) if amplifications else None,
        "db_loads_per_expiry": max(per_expiry) if per_expiry else None,
        "db_load_attempts_per_expiry": max(attempts_per_expiry) if attempts_per_expiry else None,
        "recovery": run_recovery,
        "recovery_s": (run_recovery or {}).get("time_s"),
        "recovered_last": (run_recovery or {}).get("last_signal"),
        "faults": faults,
        "ground_truth": truth,
        "series": {name: [{"t": t, "per_s": round(v, 3)} for t, v in values] for name, values in sources.items()},
    }


def amplification(peak: float | None, steady: float | None) -> float | None:
    """Peak ÷ steady, the steady load floored at STEADY_FLOOR_PER_S (a warm cache's steady load is ~0)."""
    if peak is None or steady is None:
        return None
    return peak / max(steady, STEADY_FLOOR_PER_S)


def _in(series: list[tuple[int, float]], phases: list[Phase]) -> list[float]:
    return [v for t, v in series if any(p.contains_second(t) for p in phases)]


def _amplification(series: list[tuple[int, float]], before: list[Phase], start: float, end: float) -> dict:
    steady = _median([v for t, v in series if any(p.contains_second(t) for p in before)])
    peak = max((v for t, v in series if start - 0.5 <= t < end - 0.5), default=None)
    return {"steady_per_s": steady, "peak_per_s": peak, "amplification": amplification(peak, steady)}


def _hot_key_expiry(metrics: CounterSeries, pg: CounterSeries, truth: dict | None, window: FaultWindow,
                    start: float, end: float) -> dict:
    """Hot-key DB reads that ran (loads) and that fell through to the DB path (attempts, refused at
    the pool too) over the effect window, per key expired. Where the targets disagree with PostgreSQL,
    the loads are PostgreSQL's: the targets' hot reads scaled by PostgreSQL's count over theirs in the window."""
    keys = window.expired_keys or 0
    # no scrape of the targets (metrics.jsonl missing): no data, not 0 loads
    has = metrics.has
    reads = metrics.increase(DB_QUERIES, start, end, kind="read", key_class="hot") if has(DB_QUERIES) else None
    attempts = metrics.increase(DB_ATTEMPTS, start, end, kind="read", key_class="hot") if has(DB_ATTEMPTS) else None
    recomputes = metrics.increase(KEY_RECOMPUTES, start, end) if has(KEY_RECOMPUTES) else None
    source = "targets" if reads is not None else None
    if reads is not None and truth and not truth["agree"]:
        theirs = metrics.increase(DB_QUERIES, start, end, **truth["target_labels"])
        ours = pg.increase(truth["pg_counter"], start, end)
        if truth["pg_counter"] == "xact_commit":
            ours += pg.increase("xact_rollback", start, end)
        if theirs:
            reads, source = reads * min(1.0, ours / theirs), "postgresql"
    return {"keys_expired": keys, "window_s": end - start, "db_reads": reads, "db_reads_source": source,
            "db_read_attempts": attempts, "recomputes": recomputes,
            "db_reads_per_key": _ratio(reads, keys), "db_read_attempts_per_key": _ratio(attempts, keys),
            "recomputes_per_key": _ratio(recomputes, keys)}


def normal_limit(steady_values: list[float], floor: float) -> float | None:
    """The highest per-second value that still counts as normal: the steady phase's 95th percentile
    second, or its median plus `floor`, whichever is higher; None without steady data."""
    if not steady_values:
        return None
    ordered = sorted(steady_values)
    quantile = ordered[min(len(ordered) - 1, math.ceil(RECOVERY_QUANTILE * len(ordered)) - 1)]
    return max(quantile, statistics.median(ordered) + floor)


def recovery_by_signal(t_end: float, signals: dict[str, list[tuple[int, float]]], limits: dict[str, float | None],
                       until: float = math.inf) -> dict:
    """Per signal (p99, errors, DB load) with a steady limit: seconds from the fault's end until it is
    back within its limit for RECOVERY_HOLD_S seconds in a row (None: not before `until` or the data's end).
    The fault's recovery is the slowest signal's; `recovered_last` names it."""
    by_signal = {name: recovery_time(t_end, series, limits[name], until)
                 for name, series in signals.items() if limits.get(name) is not None and series}
    if not by_signal:
        return {"recovery_s": None, "recovered_last": None, "by_signal": {}}
    never = [name for name, seconds in by_signal.items() if seconds is None]
    if never:
        return {"recovery_s": None, "recovered_last": never[0], "by_signal": by_signal}
    last = max(by_signal, key=lambda name: by_signal[name])
    return {"recovery_s": by_signal[last], "recovered_last": last, "by_signal": by_signal}


def recovery_summary(t_end: float, until: float, recovery: dict, data_end: float | None) -> dict:
    """The one recovery of a fault, as every report shows it: {recovered (null: not judged - fewer than
    RECOVERY_HOLD_S seconds left, or no signal with steady data), time_s (from the fault's end; null
    unless recovered), within_s (how long was judged: to the next fault, else the planned load end,
    else the data's end), last_signal (the signal that recovered last, or the first that never did),
    from_s (the fault's end)}."""
    end = until if math.isfinite(until) else (data_end if data_end is not None else t_end)
    within = round(max(0.0, end - t_end), 3)
    judged = bool(recovery["by_signal"]) and within >= RECOVERY_HOLD_S
    recovered = None if not judged else recovery["recovery_s"] is not None
    return {"recovered": recovered, "time_s": recovery["recovery_s"] if recovered else None,
            "within_s": within, "last_signal": recovery["recovered_last"], "from_s": round(t_end, 3)}


def _data_end(signals: dict[str, list[tuple[int, float]]]) -> float | None:
    ends = [t + 1 for series in signals.values() for t, _ in series[-1:]]
    return float(max(ends)) if ends else None


def recovery_time(t_end: float, series: list[tuple[int, float]], limit: float, until: float = math.inf) -> float | None:
    """Seconds from `t_end` until the per-second series stays <= limit for RECOVERY_HOLD_S seconds."""
    values = dict(series)
    seconds = sorted(s for s in values if t_end - 1 < s < until)
    for n, second in enumerate(seconds):
        hold = seconds[n:n + RECOVERY_HOLD_S]
        if len(hold) == RECOVERY_HOLD_S and all(values[s] <= limit for s in hold) and (
                hold[-1] - hold[0] == RECOVERY_HOLD_S - 1):
            return max(0.0, round(second - t_end, 3))
    return None


def ground_truth(metrics: CounterSeries, pg: CounterSeries) -> dict | None:
    """Do the targets' executed DB queries agree with PostgreSQL's own count? pg_stat_statements' calls
    of the read query against the targets' executed reads; without it, PostgreSQL's transactions
    against all the targets' queries. None without both sources."""
    span = pg.span()
    if span is None or not metrics.has(DB_QUERIES):
        return None
    start, end = span
    if pg.has("read_calls"):
        targets = metrics.increase_within(DB_QUERIES, start, end, kind="read")
        counted = pg.increase_within("read_calls", start, end)
        tolerance = max(GROUND_TRUTH_TOLERANCE * targets, GROUND_TRUTH_SLACK)
        earlier, low, high = 0.0, targets - tolerance, targets + tolerance
        source, what, theirs = "pg_stat_statements", "read queries", "executed DB reads"
        series, counter, labels = "pg_reads", "read_calls", {"kind": "read"}
    elif pg.has("xact_commit"):
        targets = metrics.increase_within(DB_QUERIES, start, end)
        earlier = metrics.at_first_sample(DB_QUERIES)  # e.g. the warm-up, maybe reported late
        counted = pg.increase_within("xact_commit", start, end) + pg.increase_within("xact_rollback", start, end)
        # each sample is one transaction of the scraper's own, between the first and the last sample
        own = max(0, sum(1 for samples in pg.samples.values() for t, values in samples
                         if start <= t <= end and "xact_commit" in values) - 1)
        counted = max(0.0, counted - own)
        tolerance = max(GROUND_TRUTH_TOLERANCE * targets, GROUND_TRUTH_SLACK)
        low, high = targets - tolerance, targets + earlier + tolerance
        source, what, theirs = "xact", "transactions", "executed DB queries"
        series, counter, labels = "pg_xact_commit", "xact_commit", {}
    else:
        return None
    agree = low <= counted <= high
    return {"source": source, "target_queries": targets, "target_queries_before": earlier,
            "pg_transactions": counted, "pg_count": counted, "window": [start, end],
            "accepted": [max(0.0, low), high], "agree": agree,
            "pg_series": series, "pg_counter": counter, "target_labels": labels,
            "note": None if agree else (
                f"PostgreSQL counted {counted:.0f} {what} but the targets report {targets:.0f} {theirs} "
                f"over the same {end - start:.0f} s (accepted {max(0.0, low):.0f}-{high:.0f}): "
                "the DB figures shown are PostgreSQL's")}


def _next_start(windows: list[FaultWindow], window: FaultWindow) -> float:
    later = [w.t_start for w in windows if w.t_start > window.t_start]
    return min(later) if later else math.inf


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator
