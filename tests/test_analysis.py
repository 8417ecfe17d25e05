"""analyze_run on synthetic run folders with known answers (HDR histograms made with hdrhistogram)."""

import json

import pytest
from cachestorm.reports.analysis import analyze_run
from cachestorm.reports.dbload import normal_limit, recovery_by_signal, recovery_time
from cachestorm.reports.metrics import CounterSeries, parse_series_name
from cachestorm.reports.synthetic import write_synthetic_run
from hdrh.histogram import HdrHistogram

from cachestorm.core.errors import CachestormError


@pytest.fixture
def run_dir(tmp_path):
    return write_synthetic_run(tmp_path / "run-a")


def test_report_is_strict_json_with_run_metadata(run_dir):
    analysis = analyze_run(run_dir)
    json.dumps(analysis, allow_nan=False)
    assert analysis["schema"] == "cachestorm-report/2"
    assert analysis["run"]["strategy"] == "cache-aside" and analysis["run"]["duration_s"] == 30
    # the load's first 2 s settle (not "before"); a 2 s fault is "during" for its 5 s effect window
    assert [p["kind"] for p in analysis["phases"]] == ["settle", "before", "during", "after"]
    assert analysis["phases"][0]["t_end"] == 2 and analysis["phases"][1]["t_start"] == 2
    assert analysis["phases"][2]["t_start"] == 10 and analysis["phases"][2]["t_end"] == 15


def test_latency_is_merged_losslessly_from_hdr(run_dir):
    latency = analyze_run(run_dir)["latency"]
    assert latency["source"] == "hdr" and not latency["approximate"]
    # 2 workers x 100 values x 30 s
    assert latency["overall"]["count"] == 6000
    assert latency["by_phase"]["before"] == pytest.approx(  # 2 s to 10 s: the settle period is not in it
        {"count": 1600, "p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "p999_ms": 1.0, "max_ms": 1.0, "mean_ms": 1.0})
    assert latency["during_fault"]["p99_ms"] == pytest.approx(100.0, rel=1e-3)
    assert len(latency["series"]) == 30 and latency["series"][12]["p99_ms"] == pytest.approx(50.5, rel=1e-3)


def test_latency_prefers_merged_file(run_dir):
    merged = HdrHistogram(1, 60_000_000, 3)
    merged.record_value(7000, 10)
    (run_dir / "latency" / "merged.jsonl").write_text(json.dumps(
        {"t": 0.0, "wall": 0, "interval_s": 1.0, "worker": "merged", "kind": "all", "hist": merged.encode().decode()}))
    latency = analyze_run(run_dir)["latency"]
    assert latency["files"] == ["latency/merged.jsonl"] and latency["overall"]["count"] == 10
    assert latency["overall"]["p99_ms"] == pytest.approx(7.0, rel=1e-3)


def test_latency_falls_back_to_locust_stats_history(run_dir):
    for path in (run_dir / "latency").glob("*.jsonl"):
        path.unlink()
    header = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
    rows = [f"{1_700_000_000 + t},10,,Aggregated,100,0,2,3,3,3,4,5,6,{90 if 10 <= t < 12 else 8},95,99,99\n"
            for t in range(30)]
    (run_dir / "locust" / "stats_history.csv").write_text(header + "".join(rows))
    latency = analyze_run(run_dir)["latency"]
    assert latency["source"] == "locust" and latency["approximate"]
    assert latency["during_fault"]["p99_ms"] == 90 and latency["by_phase"]["before"]["p99_ms"] == 8


def test_db_amplification_hot_key_loads_and_recovery(run_dir):
    db = analyze_run(run_dir)["db"]
    assert db["source"] == "target_reads"
    assert db["steady_queries_per_s"] == pytest.approx(10.0)
    # 200 q/s of other keys plus 15 hot-key reads in the fault's first second
    assert db["amplification"] == pytest.approx(21.5)
    fault = db["faults"][0]
    hot = dict(fault["hot_key_expiry"])
    assert hot.pop("db_reads_source") == "targets"
    # 60 reads fell through to the DB path (attempts), 15 ran (loads): the headline's loads are executed
    assert hot == pytest.approx({"keys_expired": 10, "window_s": 5.0, "db_reads": 15.0, "db_read_attempts": 60.0,
                                 "recomputes": 10.0, "db_reads_per_key": 1.5, "db_read_attempts_per_key": 6.0,
                                 "recomputes_per_key": 1.0})
    assert db["db_loads_per_expiry"] == 1.5 and db["db_load_attempts_per_expiry"] == 6.0
    assert fault["recovery_s"] == 2.0
    pg = {p["t"]: p["per_s"] for p in db["series"]["pg_xact_commit"]}
    assert pg[5] == 12.0 and pg[10] == 202.0


def test_errors_attempts_and_cache(run_dir):
    analysis = analyze_run(run_dir)
    errors = analysis["errors"]
    assert errors["by_kind"] == {"http_5xx": 1, "timeout": 1}
    assert errors["locust_failures_by_kind"] == {"pool_exhausted": 3}
    assert errors["attempts"]["retried_requests"] == 1 and errors["attempts"]["max_attempts"] == 2
    cache = analysis["cache"]
    assert cache["hit_ratio_by_phase"]["before"] == pytest.approx(0.9)
    assert cache["hit_ratio_by_phase"]["during expire hot keys"] == pytest.approx((4 * 0.1 + 0.9) / 5)
    assert cache["recomputes"] == 300.0


def test_consistency_and_headline(run_dir):
    analysis = analyze_run(run_dir)
    headline = analysis["headline"]
    assert headline["stale_reads"] == 1 and headline["stale_reads_over_bound"] == 1
    assert headline["max_staleness_s"] == pytest.approx(19.0)
    # all reads consistent within 60 s: a number (the most this many reads can show), marked "at least"
    assert headline["lost_writes"] == 0 and isinstance(headline["nines_within_60s"], float)
    assert "nines_within_60s" in analysis["headline_notes"]["at_least"]
    assert headline["p99_ms_during_fault"] == pytest.approx(100.0, rel=1e-3)


def test_recovery_is_the_slowest_signal_against_its_steady_limit():
    steady = [(t, 1.0) for t in range(10)]
    signals = {"p99_ms": steady + [(10, 50.0), (11, 1.0), (12, 1.0), (13, 1.0)],
               "db_queries_per_s": [(t, 10.0) for t in range(11)] + [(11, 30.0), (12, 10.5), (13, 10.0)]}
    limits = {"p99_ms": normal_limit([1.0] * 10, 5.0), "db_queries_per_s": normal_limit([10.0] * 10, 2.0)}
    assert limits == {"p99_ms": 6.0, "db_queries_per_s": 12.0}
    recovery = recovery_by_signal(10.0, signals, limits)
    assert recovery == {"recovery_s": 2.0, "recovered_last": "db_queries_per_s",
                        "by_signal": {"p99_ms": 1.0, "db_queries_per_s": 2.0}}
    signals["db_queries_per_s"] = [(11, 30.0), (12, 30.0), (13, 30.0)]
    assert recovery_by_signal(10.0, signals, limits)["recovery_s"] is None
    # the case of the issue: a ~7 ms p99 wobbling by 2 ms is normal, not "17 s to recover"
    wobble = [(t, 7.0 + (t % 3)) for t in range(20)]
    assert recovery_time(5.0, wobble, normal_limit([v for _, v in wobble[:5]], 5.0)) == 0.0


def test_counter_series_sums_instances_and_survives_resets():
    records = [{"t": float(t), "instance": "a", "metrics": {'x_total{kind="read"}': v}}
               for t, v in enumerate([0, 10, 20, 5, 15])]  # restart between t=2 and t=3
    records += [{"t": float(t), "instance": "b", "metrics": {'x_total{kind="read"}': 2.0 * t}} for t in range(5)]
    series = CounterSeries.from_metrics(records)
    assert series.rate("x_total", kind="read") == [(0, 12.0), (1, 12.0), (2, 7.0), (3, 12.0)]
    assert series.increase("x_total") == 43.0 and series.rate("x_total", kind="write") == [
        (0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0)]
    assert parse_series_name('m{a="x,y",b="2"}') == ("m", frozenset({("a", "x,y"), ("b", "2")}))


def test_not_a_run_folder(tmp_path):
    with pytest.raises(CachestormError, match="no such run folder"):
        analyze_run(tmp_path / "missing")
    with pytest.raises(CachestormError, match="not a run folder"):
        analyze_run(tmp_path)


def test_empty_run_folder_still_analyzes(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    analysis = analyze_run(tmp_path)
    json.dumps(analysis, allow_nan=False)
    assert analysis["latency"]["source"] is None and analysis["consistency"] is None


def test_latency_counts_and_send_lag_from_locustfiles(run_dir):
    lag = HdrHistogram(1, 60_000_000, 3)
    lag.record_value(50_000_000, 5)  # 50 s of send lag must not count as latency
    with (run_dir / "latency" / "w0-100.jsonl").open("a") as handle:
        handle.write(json.dumps({"t": 3.0, "wall": 0, "interval_s": 1.0, "worker": "w0", "kind": "send_lag",
                                 "hist": lag.encode().decode()}) + "\n")
        empty = HdrHistogram(1, 60_000_000, 3).encode().decode()
        handle.write(json.dumps({"t": 3.0, "wall": 0, "interval_s": 1.0, "worker": "w0", "kind": "all",
                                 "hist": empty, "counts": {"requests": 100, "attempts": 150}}) + "\n")
    analysis = analyze_run(run_dir)
    assert analysis["latency"]["overall"]["max_ms"] < 1000
    assert analysis["latency"]["by_kind"]["send_lag"]["count"] == 5
    assert analysis["latency"]["counts"] == {"requests": 100, "attempts": 150}
    assert analysis["headline"]["attempts_per_request"] == 1.5


def test_locust_files_with_the_csv_prefix_are_found(run_dir):
    # `locust --csv runs/<id>/locust/stats` writes stats_stats.csv, stats_stats_history.csv, stats_failures.csv
    for path in (run_dir / "latency").glob("*.jsonl"):
        path.unlink()
    (run_dir / "locust" / "failures.csv").rename(run_dir / "locust" / "stats_failures.csv")
    header = "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
    (run_dir / "locust" / "stats_stats_history.csv").write_text(
        header + "1700000003,1,,Aggregated,1,0,2,3,3,3,4,5,6,N/A,95,99,99\n"
        + "1700000004,1,,Aggregated,1,0,2,3,3,3,4,5,6,8,95,99,99\n")
    (run_dir / "locust" / "stats_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count,Average Response Time,50%,90%,99%,99.9%,100%\n"
        "GET,/x,10,1,3,2,4,8,9,9\n,Aggregated,10,1,3,2,4,8,9,9\n")
    analysis = analyze_run(run_dir)
    assert analysis["errors"]["locust_failures_by_kind"] == {"pool_exhausted": 3}
    latency = analysis["latency"]
    assert latency["source"] == "locust" and [p["t"] for p in latency["series"]] == [4]
    assert latency["overall"]["p99_ms"] == 8.0 and latency["overall"]["count"] == 10


def test_probes_are_summarized_per_probe(run_dir):
    with (run_dir / "journal.jsonl").open("a") as handle:
        for t, value in ((26.0, 0.5), (27.0, 0.7)):
            handle.write(json.dumps({"what": "probe hit ratio recovers", "kind": "probe", "t_start": t, "t_end": t,
                                     "outcome": "deviated", "details": {"metric": "hit_ratio", "value": value,
                                                                        "min": 0.8, "max": None}}) + "\n")
    (probe,) = analyze_run(run_dir)["probes"]
    assert probe["checks"] == 3 and probe["outcomes"] == {"ok": 1, "deviated": 2}
    assert probe["worst_value"] == 0.5 and probe["first_deviation_t"] == 26.0


def test_amplification_seen_by_postgres_too(run_dir):
    fault = analyze_run(run_dir)["db"]["faults"][0]
    # PostgreSQL commits: steady 10 + 2 (writes) per second, 200 + 2 during the fault
    assert fault["by_source"]["pg_xact_commit"] == pytest.approx(
        {"steady_per_s": 12.0, "peak_per_s": 202.0, "amplification": 202.0 / 12.0})
    assert fault["by_source"]["target_reads"]["amplification"] == pytest.approx(21.5)


def test_interval_holding_the_fault_start_counts_as_during(tmp_path):
    """Recorders start their 1 s intervals off the second; the interval in which the fault starts
    carries its first effect and must not be reported as "before" (a real bug: p99 before > during)."""
    import json as _json

    from cachestorm.reports.latency import analyze_latency
    from cachestorm.reports.phases import Phase
    from hdrh.histogram import HdrHistogram

    (tmp_path / "latency").mkdir()
    lines = []
    for t, value_us in ((8.4, 1_000), (9.4, 1_000), (10.4, 100_000), (11.4, 1_000)):
        histogram = HdrHistogram(1, 60_000_000, 3)
        for _ in range(100):
            histogram.record_value(value_us)
        lines.append(_json.dumps({"t": t, "interval_s": 1.0, "worker": "w", "kind": "all",
                                  "hist": histogram.encode().decode()}))
    (tmp_path / "latency" / "merged.jsonl").write_text("\n".join(lines) + "\n")
    phases = [Phase("before", "before", 8.0, 10.8), Phase("during", "during", 10.8, 12.5, "f")]
    result = analyze_latency(tmp_path, phases, None)
    assert result["by_phase"]["before"]["p99_ms"] < 2
    assert result["by_phase"]["during"]["p99_ms"] >= 99


def test_counts_belong_to_the_phase_holding_their_interval_s_middle(tmp_path):
    """Attempts are counted by when they were sent: a fault window's counts leave out the interval
    sent mostly before the fault and keep its last one, sent mostly inside it (by the intervals'
    ends, attempts per request here read 2.0 instead of 3.0)."""
    import json as _json

    from cachestorm.reports.latency import analyze_latency
    from cachestorm.reports.phases import Phase
    from hdrh.histogram import HdrHistogram

    (tmp_path / "latency").mkdir()
    lines = []
    for t, attempts in ((8.4, 100), (9.4, 100), (10.4, 300), (11.4, 300), (12.4, 100)):
        histogram = HdrHistogram(1, 60_000_000, 3)
        histogram.record_value(1_000)
        lines.append(_json.dumps({"t": t, "interval_s": 1.0, "worker": "w", "kind": "all",
                                  "hist": histogram.encode().decode(),
                                  "counts": {"requests_started": 100, "attempts_started": attempts}}))
    (tmp_path / "latency" / "merged.jsonl").write_text("\n".join(lines) + "\n")
    phases = [Phase("before", "before", 8.0, 10.2), Phase("during", "during", 10.2, 12.1, "f"),
              Phase("after", "after", 12.1, 14.0, "f")]
    result = analyze_latency(tmp_path, phases, None)
    assert result["counts_during_fault"] == {"requests_started": 200, "attempts_started": 600}
    assert result["counts_by_phase"]["before"] == {"requests_started": 200, "attempts_started": 200}


def test_a_fault_without_traffic_measures_no_amplification():
    """A fault that fired before any request was answered (Locust still booting) measured nothing:
    its amplification is null, so a gate on it fails as "not measured" instead of passing on 0 x."""
    from cachestorm.reports.dbload import analyze_db
    from cachestorm.reports.phases import FaultWindow, split_phases

    metrics = CounterSeries.from_metrics([{"t": float(t), "instance": "a", "metrics": {
        'cachestorm_db_queries_total{kind="read",key_class="hot"}': 0.0}} for t in range(30)])
    windows = [FaultWindow("expire hot keys", 5.0, 5.01, {"keys": 10})]
    phases = split_phases(windows, 0.0, 30.0)
    p99 = [(t, 5.0) for t in range(15, 30)]  # the first answer at 15 s, long after the window [5, 10)
    db = analyze_db(metrics, CounterSeries({}), phases, windows, p99)
    assert db["faults"][0]["no_traffic"] and db["amplification"] is None
    db = analyze_db(metrics, CounterSeries({}), phases, windows, [(t, 5.0) for t in range(30)])
    assert not db["faults"][0]["no_traffic"] and db["amplification"] == 0.0


def _add_pool_timeouts(run_dir, per_second: dict[int, float], shift: float = 0.0) -> None:
    """Doctor the synthetic scrapes: `cachestorm_pool_timeouts_total` grows by per_second[s] between the
    scrapes at s and s + 1, each scrape taken `shift` seconds later than the synthetic one."""
    lines, total = [], {}
    path = run_dir / "metrics.jsonl"
    for line in path.read_text().splitlines():
        record = json.loads(line)
        t = int(record["t"])
        total[record["instance"]] = sum(v / 2 for s, v in per_second.items() if s < t)
        record["metrics"]["cachestorm_pool_timeouts_total"] = total[record["instance"]]
        record["t"] += shift
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")


def _without_failures(run_dir):
    """The synthetic histories fail 2 of their 19 sampled reads before the fault (a timeout, a 503): drop them."""
    [path] = (run_dir / "histories").glob("*.tsv")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line for line in lines if "\ttimeout\t" not in line and "\t503\t" not in line) + "\n")


def test_a_baseline_error_rate_needs_enough_operations(run_dir):
    """Without the clients' counts, the histories' 2 failures in 19 sampled operations before the fault are
    no error rate (one failure more or less would move it by 6 points)."""
    baseline = analyze_run(run_dir)["baseline"]
    assert baseline["figures"]["error_rate"]["value"] is None
    assert "19 sampled operations, fewer than 100" in baseline["figures"]["error_rate"]["source"]
    assert baseline["healthy"] is True  # judged on what was measured: p99


def test_a_healthy_baseline_is_judged_against_stated_limits(run_dir):
    _without_failures(run_dir)
    analysis = analyze_run(run_dir)
    assert analysis["headline"]["baseline_healthy"] is True
    baseline = analysis["headline"]["baseline"]
    assert baseline["settle_s"] == 2.0 and baseline["p99_ms"] == {"value": pytest.approx(1.0, rel=1e-3),
                                                                 "limit": 1000.0, "broke": False}
    assert analysis["baseline"]["window"] == [2.0, 10.0] and analysis["baseline"]["sentence"] is None


def test_an_unhealthy_baseline_leads_the_report_and_fails_the_gate(run_dir, tmp_path):
    from cachestorm.reports.gate import evaluate_gate
    from cachestorm.reports.headline import lead
    from cachestorm.reports.render import render_run

    _without_failures(run_dir)
    _add_pool_timeouts(run_dir, {5: 40.0, 6: 40.0})  # the pool ran dry 80 times, before any fault
    render_run(run_dir)
    analysis = json.loads((run_dir / "report.json").read_text())
    headline = analysis["headline"]
    assert headline["baseline_healthy"] is False
    assert headline["baseline"]["pool_timeouts"] == {"value": 80.0, "limit": 0, "broke": True}
    sentence = analysis["baseline"]["sentence"]
    assert "80 pool timeouts" in sentence and "--rate" in sentence and "cachestorm capacity" in sentence
    assert lead(analysis)[0] == sentence  # the report leads with it
    assert sentence in (run_dir / "summary.md").read_text()
    from rich.console import Console

    from cachestorm.summary import print_summary

    console = Console(record=True, width=400)
    print_summary(run_dir, console)
    printed = console.export_text()
    assert printed.startswith("Unhealthy baseline: ")  # the CLI summary too, first
    # and it ends with the report's plain-words verdict, at its level
    assert " ".join(printed.split()).endswith(" ".join(f"red: {headline['verdict']['text']}".split()))
    config = tmp_path / "gate.yaml"
    config.write_text("slos:\n  - {metric: lost_writes, max: 0}\n")
    gate = evaluate_gate(config, [run_dir])
    [refused] = [r for r in gate.results if r.metric == "baseline_healthy"]
    assert not refused.passed and refused.message == sentence and gate.exit_code == 1
    config.write_text("allow_unhealthy_baseline: true\nslos:\n  - {metric: lost_writes, max: 0}\n")
    assert evaluate_gate(config, [run_dir]).exit_code == 0


def test_no_second_of_the_fault_counts_as_before(run_dir):
    """Pool timeouts in the scrape interval the fault starts in ([9.5, 10.5), the fault at 10 s) are the fault's."""
    _without_failures(run_dir)
    _add_pool_timeouts(run_dir, {9: 40.0}, shift=0.5)
    analysis = analyze_run(run_dir)
    assert analysis["headline"]["baseline"]["pool_timeouts"]["value"] == 0
    assert analysis["headline"]["baseline_healthy"] is True
    assert analysis["headline"]["pool_timeouts"] == 40


def test_the_baseline_error_rate_takes_only_the_clients_seconds_wholly_before_the_fault():
    """The fault at 10.6 s: the clients' interval [10, 11) sent mostly before it, but its attempts
    time out because of it (the demo's unprotected run: 7 timeouts there made its baseline 1.1 % errors)."""
    from cachestorm.reports.baseline import judge_baseline
    from cachestorm.reports.phases import Phase

    seconds = [{"t": s, "attempts_started": 100, "requests_started": 100} for s in range(2, 10)]
    seconds.append({"t": 10, "attempts_started": 100, "requests_started": 100, "timeouts": 30})
    analysis = {"latency": {"by_phase": {"before": {"p99_ms": 5.0}}, "counts_by_second": seconds}}
    phases = [Phase("settle", "settle", 0.0, 2.0), Phase("before", "before", 2.0, 10.6),
              Phase("during x", "during", 10.6, 15.6, "x")]
    baseline = judge_baseline(analysis, CounterSeries({}), CounterSeries({}), phases, {})
    assert baseline["figures"]["error_rate"]["value"] == 0.0 and baseline["healthy"] is True
