"""The incident's story in numbers: the DB's own latency before/during/after (from the targets' query
histogram and PostgreSQL's statement times and slot queue), pool timeouts, client timeouts and
retries in the fault window, and whether the system came back by itself once the trigger ended
(metastability: Bronson et al., "Metastable Failures in Distributed Systems", HotOS 2021)."""

from __future__ import annotations

import math
import statistics

from cachestorm.reports.metrics import CounterSeries
from cachestorm.reports.phases import FaultWindow, Phase, effect_end

DB_QUERY_SECONDS = "cachestorm_db_query_seconds"
POOL_TIMEOUTS = "cachestorm_pool_timeouts_total"
DB_READS = "cachestorm_db_queries_total"


def bucket_quantile(metrics: CounterSeries, t_from: float, t_to: float, q: float = 0.99) -> float | None:
    """The q-quantile (ms) of the DB query histogram over [t_from, t_to], from its buckets' increases
    (linear inside a bucket, as Prometheus' histogram_quantile); None without queries."""
    name = DB_QUERY_SECONDS + "_bucket"
    cumulative = sorted((float(le), metrics.increase(name, t_from, t_to, le=le))
                        for le in metrics.label_values(name, "le"))
    return _quantile(cumulative, q)


def bucket_quantiles(metrics: CounterSeries, windows: list[tuple[float, float]], q: float = 0.99) -> list[float | None]:
    """bucket_quantile for each (t_from, t_to) window, the buckets' increases found in one pass."""
    increases = metrics.increases_by_label(DB_QUERY_SECONDS + "_bucket", "le", windows)
    return [_quantile(sorted((float(le), counts[w]) for le, counts in increases.items()), q)
            for w in range(len(windows))]


def _quantile(cumulative: list[tuple[float, float]], q: float) -> float | None:
    if not cumulative or not cumulative[-1][1]:
        return None
    rank = q * cumulative[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in cumulative:
        if count >= rank:
            if math.isinf(upper):
                return round(lower * 1000, 3)
            share = (rank - below) / (count - below) if count > below else 1.0
            return round((lower + (upper - lower) * share) * 1000, 3)
        lower, below = upper, count
    return None


def _seconds(*series: CounterSeries) -> list[int]:
    times = [t for s in series for t in s.times()]
    return list(range(int(min(times)), int(max(times)) + 1)) if times else []


def _gauge(series: CounterSeries, name: str) -> list[tuple[int, float]]:
    return series.gauge(name)


def db_latency(metrics: CounterSeries, pg: CounterSeries, phases: list[Phase]) -> dict:
    """p99 per second and per phase (targets' histogram), PostgreSQL's mean execution time per second
    and how many queries queued for a slot."""
    per_second = []
    if metrics.has(DB_QUERY_SECONDS + "_bucket"):
        seconds = _seconds(metrics)
        for second, p99 in zip(seconds, bucket_quantiles(metrics, [(s + 0.01, s + 0.99) for s in seconds]), strict=True):
            if p99 is not None:
                per_second.append({"t": second, "p99_ms": p99})
    pg_mean = []
    if pg.has("exec_ms") and pg.has("calls"):
        calls = dict(pg.rate("calls"))
        pg_mean = [{"t": t, "mean_ms": round(v / calls[t], 3)} for t, v in pg.rate("exec_ms") if calls.get(t)]
    # "before" ends with the last scrape interval that ends by the fault's start (an interval overlapping
    # the fault would bring its first second in); the other phases take every interval they overlap
    by_phase = {phase.name: bucket_quantile(metrics, phase.t_start,
                                            phase.t_end - 1.0 if phase.kind == "before" else phase.t_end)
                for phase in phases}
    before = [p for p in phases if p.kind == "before"]
    during = [by_phase[p.name] for p in phases if p.kind == "during" and by_phase[p.name] is not None]
    after = [by_phase[p.name] for p in phases if p.kind == "after" and by_phase[p.name] is not None]
    return {
        "p99_ms_by_phase": by_phase,
        "p99_ms_before_fault": by_phase[before[0].name] if before else None,
        "p99_ms_during_fault": max(during) if during else None,
        "p99_ms_after_fault": max(after) if after else None,
        "peak_p99_ms": max((p["p99_ms"] for p in per_second), default=None),
        "series": per_second,
        "pg_mean_exec_ms": pg_mean,
        "pg_slot_waits": [{"t": t, "waiting": v} for t, v in _gauge(pg, "slot_waits")],
    }


def fault_window_counts(metrics: CounterSeries, latency: dict, phases: list[Phase]) -> dict:
    """Client timeouts, failed attempts, attempts per request and the targets' pool timeouts in the
    fault window(s) and over the whole run."""
    during_counts = latency.get("counts_during_fault") or {}
    counts = latency.get("counts") or {}
    during = [p for p in phases if p.kind == "during"]
    has_pool = metrics.has(POOL_TIMEOUTS)
    return {
        "timeouts": counts.get("timeouts", 0) if counts else None,
        "timeouts_during_fault": during_counts.get("timeouts", 0) if during and counts else None,
        "conn_errors_during_fault": during_counts.get("conn_errors", 0) if during and counts else None,
        "server_errors_during_fault": during_counts.get("server_errors", 0) if during and counts else None,
        "pool_timeouts": metrics.increase(POOL_TIMEOUTS) if has_pool else None,
        "pool_timeouts_during_fault": sum(metrics.increase(POOL_TIMEOUTS, p.t_start, p.t_end) for p in during)
        if has_pool and during else None,
        "attempts_per_request_during_fault": _per_request(during_counts) if during else None,
    }


def _per_request(counts: dict) -> float | None:
    """Attempts sent per logical request sent in these seconds (the clients' offered amplification);
    without those counts, attempts per request completed."""
    if counts.get("requests_started"):
        return round(counts.get("attempts_started", 0) / counts["requests_started"], 3)
    requests = counts.get("requests")
    return round(counts.get("attempts", requests) / requests, 3) if requests else None


RECOVERY_HOLD_S = 3          # seconds in a row the clients must see a healthy system
HEALTHY_FAILED_SHARE = 0.01  # failed attempts (timeouts, connection errors, 5xx) per attempt sent
HEALTHY_AMPLIFICATION = 1.1  # attempts sent per logical request, relative to steady state


def client_recovery(by_second: list[dict], after_s: float, until_s: float, steady_attempts: float | None) -> float | None:
    """Seconds from `after_s` until the clients see a healthy system for RECOVERY_HOLD_S seconds in a
    row: requests sent, almost no failed attempts, retries back to steady. None if not before `until_s`.
    A second without any request sent is not healthy (a stalled client proves nothing)."""
    limit = (steady_attempts or 1.0) * HEALTHY_AMPLIFICATION
    seconds = {int(c["t"]): c for c in by_second}
    for second in range(math.ceil(after_s), int(until_s) - RECOVERY_HOLD_S + 1):
        if all(_healthy(seconds.get(s, {}), limit) for s in range(second, second + RECOVERY_HOLD_S)):
            return float(second - after_s) if second > after_s else 0.0
    return None


def client_health(by_second: list[dict], steady_attempts: float | None) -> list[tuple[int, float]]:
    """The clients' view per second as a recovery signal (reports/dbload.py): 0 when healthy as
    `client_recovery` judges a second (requests sent, almost no failed attempts, retries back to
    steady), else 1."""
    limit = (steady_attempts or 1.0) * HEALTHY_AMPLIFICATION
    return [(int(c["t"]), 0.0 if _healthy(c, limit) else 1.0) for c in sorted(by_second, key=lambda c: c["t"])]


def _healthy(counts: dict, attempts_limit: float) -> bool:
    """One second of the clients' counts: requests sent, failed attempts <= max(1, 1 %), attempts per
    request <= attempts_limit."""
    started = counts.get("requests_started", 0)
    attempts = counts.get("attempts_started", started)
    failed = counts.get("timeouts", 0) + counts.get("conn_errors", 0) + counts.get("server_errors", 0)
    return started > 0 and failed <= max(1, HEALTHY_FAILED_SHARE * attempts) and attempts <= attempts_limit * started


def steady_attempts_per_request(latency: dict, phases: list[Phase]) -> float | None:
    by_phase = latency.get("counts_by_phase") or {}
    before = next((by_phase.get(p.name) for p in phases if p.kind == "before"), None) or {}
    return _per_request(before)


def metastability(metrics: CounterSeries, latency: dict, db: dict, phases: list[Phase],
                  windows: list[FaultWindow], min_window_s: float, load_end_s: float | None) -> dict | None:
    """Once the last trigger is over: did the system come back to normal by itself before the load
    ended (a retry storm can keep a system down after its cause is gone) and how long it took - the
    run's one recovery, `db.recovery` (reports/dbload.py), read here, never judged again - and the
    work amplification meanwhile (attempts and DB reads relative to steady)."""
    if not windows:
        return None
    by_phase = latency.get("counts_by_phase") or {}
    after_phases = [p for p in phases if p.kind == "after"]
    after = by_phase.get(after_phases[-1].name) if after_phases else None
    steady_attempts = steady_attempts_per_request(latency, phases)
    after_attempts = _per_request(after or {})
    trigger_end = effect_end(windows[-1], min_window_s)
    until = load_end_s if load_end_s is not None else max((p.t_end for p in phases), default=trigger_end)
    run_recovery = db.get("recovery") or {}
    reads = metrics.rate(DB_READS, kind="read") if metrics.has(DB_READS) else []
    after_reads = [v for t, v in reads if trigger_end <= t + 0.5 < until]
    steady_db = db.get("steady_queries_per_s")
    return {
        "trigger_ended_at_s": run_recovery.get("from_s", round(trigger_end, 3)),  # where the recovery is measured from
        "judged_until_s": round(until, 3),
        "recovered_on_its_own": run_recovery.get("recovered"),
        "recovery_s": run_recovery.get("time_s"),
        "attempts_per_request_steady": steady_attempts,
        "attempts_per_request_after": after_attempts,
        "attempts_amplification_after": round(after_attempts / steady_attempts, 3)
        if after_attempts and steady_attempts else None,
        "db_load_amplification_after": round(statistics.median(after_reads) / steady_db, 3)
        if after_reads and steady_db else None,
    }


SECOND_WAVE_AFTER_S = 3.0  # the first wave's misses and refills are over by then


def expiry_waves(metrics: CounterSeries, windows: list[FaultWindow], load_end_s: float | None) -> list[dict]:
    """For a fault that synchronized expiries (synchronized-expiry: `wave_in_s`): the DB read peak of
    the first wave (when they all expire) and of the second (what was refilled then, expiring one
    TTL later: jitter spreads it). The second wave is the highest second from 3 s after the first
    until the load ends."""
    reads = metrics.rate(DB_READS, kind="read") if metrics.has(DB_READS) else []
    waves = []
    for window in windows:
        details = window.details or {}
        wave_in = details.get("wave_in_s", (details.get("applied") or {}).get("wave_in_s"))
        if not isinstance(wave_in, int | float) or not reads:
            continue
        first_at = window.t_start + wave_in
        end = load_end_s if load_end_s is not None else max(t for t, _ in reads) + 1
        first = max((v for t, v in reads if first_at - 1 <= t < first_at + SECOND_WAVE_AFTER_S), default=None)
        second = max((v for t, v in reads if first_at + SECOND_WAVE_AFTER_S <= t < end), default=None)
        waves.append({"fault": window.name, "first_wave_at_s": round(first_at, 3), "first_wave_peak_reads_per_s": first,
                      "second_wave_peak_reads_per_s": second})
    return waves


def analyze_incident(metrics: CounterSeries, pg: CounterSeries, phases: list[Phase], windows: list[FaultWindow],
                     latency: dict, db: dict, min_window_s: float, load_end_s: float | None = None) -> dict:
    """`load_end_s`: when the load was meant to end (load start + --duration); what a client does
    while Locust stops is not judged."""
    return {
        "db_latency": db_latency(metrics, pg, phases),
        "window": fault_window_counts(metrics, latency, phases),
        "metastability": metastability(metrics, latency, db, phases, windows, min_window_s, load_end_s),
        "expiry_waves": expiry_waves(metrics, windows, load_end_s),
    }
