"""`analyze_run(run_dir)`: everything a report shows, from the run folder alone (schema: docs/report-schema.md)."""

from __future__ import annotations

from pathlib import Path

from cachestorm.reports.baseline import judge_baseline
from cachestorm.reports.cachestats import analyze_cache
from cachestorm.reports.checker import DEFAULT_WITHIN_S, check_history, declared_bound
from cachestorm.reports.dbload import analyze_db
from cachestorm.reports.error_kinds import analyze_errors
from cachestorm.reports.headline import build_headline, headline_notes
from cachestorm.reports.history import read_run_history
from cachestorm.reports.incident import analyze_incident, client_health, steady_attempts_per_request
from cachestorm.reports.latency import analyze_latency
from cachestorm.reports.metrics import CounterSeries
from cachestorm.reports.phases import (
    BASELINE_SETTLE_S,
    failed_faults,
    fault_windows,
    load_window,
    split_phases,
)
from cachestorm.reports.verdict import build_verdict
from cachestorm.reports.warnings import run_warnings

from cachestorm.core.runfiles import damaged, first_failure
from cachestorm.core.runfolder import RunFolder

SCHEMA = "cachestorm-report/2"  # 2: anomalies count broken promises only; nines are numbers


def analyze_run(run_dir: str | Path, *, within_s: tuple[float, ...] = DEFAULT_WITHIN_S,
                expiry_window_s: float = 5.0) -> dict:
    """Analyse one run folder into the JSON-serialisable dict written as report.json. A damaged file is
    one line naming it (its reader's guard), else naming the folder: never a traceback."""
    folder = RunFolder.existing(run_dir)
    with damaged(folder.path, "a file in this run folder holds unexpected content"):
        return _analyze_run(folder, within_s, expiry_window_s)


def _analyze_run(folder: RunFolder, within_s: tuple[float, ...], expiry_window_s: float) -> dict:
    run_dir = folder.path
    run = folder.meta()
    journal = folder.journal_records()
    with damaged(folder.metrics_path):
        metrics = CounterSeries.from_metrics(folder.iter_metrics())
    with damaged(folder.pg_stats_path):
        pg_records = folder.pg_stats()
        pg = CounterSeries.from_pg_stats(pg_records)
    started_at = run.get("started_at")
    run_end = _run_end(run, journal) or _data_end(metrics, pg)
    windows = fault_windows(journal, run_end)
    t_begin, t_finish = load_window(journal, (0.0, run_end))
    phases = split_phases(windows, t_begin, t_finish, expiry_window_s, BASELINE_SETTLE_S)

    latency = analyze_latency(run_dir, phases, started_at)
    p99_series = [(p["t"], p["p99_ms"]) for p in latency["series"] if p.get("p99_ms") is not None]
    history = read_run_history(run_dir)
    t0_ns = run.get("t0_monotonic_ns")
    locust_totals = next((row for row in folder.locust_csv("stats")
                          if row.get("Name") == "Aggregated"), None)
    truth = folder.truth()
    settings = run.get("settings") or {}
    consistency = None
    if folder.history_files():
        consistency = check_history(history, truth, staleness_bound_s=declared_bound(run, truth),
                                    within_s=within_s, t0_ns=t0_ns, domain=settings.get("domain"),
                                    revoke_bound_s=truth.declared_revoke_bound_s if truth else None)
        consistency["torn_lines"] = history.torn_lines
    errors = analyze_errors(history, t0_ns, folder.locust_csv("failures"), metrics, locust_totals)
    error_series = [(p["t"], p["errors"]) for p in errors.get("series") or []]
    duration = settings.get("duration_s")
    load_end = t_begin + float(duration) if isinstance(duration, int | float) else None
    client_series = client_health(latency.get("counts_by_second") or [], steady_attempts_per_request(latency, phases))
    analysis = {
        "schema": SCHEMA,
        "run": _run_info(run_dir, run, run_end) | {"outcome": run.get("outcome"),
                                                   "failure": first_failure(journal)},
        "phases": [phase.to_dict() for phase in phases],
        "faults": [{"name": w.name, "t_start": w.t_start, "t_end": w.t_end, "outcome": "applied", "details": w.details}
                   for w in windows] + failed_faults(journal),
        "probes": _probe_summary(journal),
        "latency": latency,
        "errors": errors,
        "db": analyze_db(metrics, pg, phases, windows, p99_series, expiry_window_s, error_series, load_end,
                         client_series),
        "cache": analyze_cache(metrics, phases),
        "consistency": consistency,
        "warnings": run_warnings(pg_records),
    }
    counts = latency.get("counts") or {}
    if counts.get("requests"):
        # the locustfiles count every attempt, sampled keys or not: the whole run's retry factor
        analysis["errors"]["attempts_per_request"] = counts.get("attempts", counts["requests"]) / counts["requests"]
    elif analysis["errors"]["attempts"]:
        analysis["errors"]["attempts_per_request"] = analysis["errors"]["attempts"]["mean_attempts"]
    else:
        analysis["errors"]["attempts_per_request"] = None
    analysis["incident"] = analyze_incident(metrics, pg, phases, windows, latency, analysis["db"], expiry_window_s,
                                            load_end)
    analysis["baseline"] = judge_baseline(analysis, metrics, pg, phases, settings)
    analysis["headline"] = build_headline(analysis)
    analysis["headline_notes"] = headline_notes(analysis)
    analysis["missing"] = missing_data(folder, run, journal, metrics, analysis)
    analysis["headline"]["verdict"] = build_verdict(analysis)  # one paragraph and a level (reports/verdict.py)
    return analysis


# headline figures by the run-folder file they come from (docs/report-schema.md, `missing`)
FAULT_FIGURES = ("p99_ms_before_fault", "p99_ms_during_fault", "p99_ms_fault_worst_second",
                 "p999_ms_fault_worst_second", "timeouts_during_fault", "pool_timeouts_during_fault",
                 "attempts_per_request_during_fault", "db_p99_ms_before_fault", "db_p99_ms_during_fault",
                 "recovered_on_its_own", "time_to_recover_s", "db_second_wave_peak_reads_per_s",
                 "db_amplification", "db_loads_per_expiry", "recovery_s")
METRICS_FIGURES = ("db_loads_per_expiry", "pool_timeouts", "pool_timeouts_during_fault", "hit_ratio",
                   "stale_serves", "lease_refused", "target_permission_violations", "db_p99_ms_before_fault",
                   "db_p99_ms_during_fault", "db_second_wave_peak_reads_per_s")


def missing_data(folder: RunFolder, run: dict, journal: list[dict], metrics: CounterSeries, analysis: dict) -> dict:
    """{headline metric: why its data is missing} for figures whose source file is missing or empty in a
    run that should have it: such a figure is no data (the gate fails it), never a 0 or an "n/a"."""
    missing: dict[str, str] = {}
    experiment = (analysis.get("run") or {}).get("experiment")
    if not journal:
        why = f"{folder.journal_path.name} is missing or empty"
        missing.update({name: why for name in FAULT_FIGURES if experiment})
        missing["faults"] = why
    elif experiment and not any(r.get("kind") == "fault" for r in journal):
        why = f"the run's experiment {experiment} left no fault record in {folder.journal_path.name}"
        missing.update({name: why for name in FAULT_FIGURES})
        missing["faults"] = why
    loaded = run.get("targets") or any(r.get("kind") == "load" for r in journal) or folder.latency_files()
    if loaded and not metrics.span():  # targets served the load, yet no scrape of theirs was kept
        why = f"{folder.metrics_path.name} is missing or holds no scrape of the targets"
        missing.update({name: why for name in METRICS_FIGURES})
    return missing


def _run_info(run_dir: Path, run: dict, run_end: float) -> dict:
    settings = run.get("settings") or {}
    experiment = run.get("experiment") or settings.get("experiment")
    return {
        "run_id": run.get("run_id") or run_dir.name,
        "label": run.get("label") or run_dir.name,
        "path": str(run_dir),
        "strategy": settings.get("strategy") or run.get("strategy"),
        "domain": settings.get("domain") or run.get("domain"),
        "experiment": None if experiment is None else Path(str(experiment)).stem,
        "started_at": run.get("started_at"),
        "ended_at": run.get("ended_at"),
        "duration_s": run_end,
        "cachestorm_version": run.get("cachestorm_version"),
        "settings": settings,
    }


def _probe_summary(journal: list[dict]) -> list[dict]:
    """Chaos steady-state probes, one row per probe: how often checked, how often deviated, worst value."""
    rows: dict[str, dict] = {}
    for record in journal:
        if record.get("kind") != "probe":
            continue
        details = record.get("details") or {}
        row = rows.setdefault(str(record.get("what")), {
            "name": str(record.get("what")), "metric": details.get("metric"), "min": details.get("min"),
            "max": details.get("max"), "checks": 0, "outcomes": {}, "worst_value": None,
            "first_deviation_t": None})
        row["checks"] += 1
        outcome = str(record.get("outcome"))
        row["outcomes"][outcome] = row["outcomes"].get(outcome, 0) + 1
        if outcome == "deviated" and row["first_deviation_t"] is None:
            row["first_deviation_t"] = record.get("t_start")
        value = details.get("value")
        if isinstance(value, int | float):
            worse = max if row["max"] is not None else min
            row["worst_value"] = value if row["worst_value"] is None else worse(row["worst_value"], value)
    return list(rows.values())


def _data_end(*series: CounterSeries) -> float:
    """Without run times, the last scrape says how long the run lasted."""
    return max((t for s in series for t in s.times()), default=0.0)


def _run_end(run: dict, journal: list[dict]) -> float:
    """Seconds from run start to its end: run.json's times, else the journal's last step."""
    started, ended = run.get("started_at"), run.get("ended_at")
    if started is not None and ended is not None:
        return float(ended) - float(started)
    ends = [r.get("t_end") for r in journal if r.get("t_end") is not None]
    return float(max(ends)) if ends else 0.0
