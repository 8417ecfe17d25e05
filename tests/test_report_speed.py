"""The report's fast algorithms give the old ones' numbers exactly, and their work grows linearly with
the run's length (counted: sample values read, steps visited, histograms added; never seconds)."""

from __future__ import annotations

import json
import math
import random

import pytest
from cachestorm.reports import analysis, latency, metrics
from cachestorm.reports.latency import new_histogram, summarize
from cachestorm.reports.metrics import CounterSeries
from cachestorm.reports.synthetic import write_realistic_run

from cachestorm.core.errors import CachestormError
from cachestorm.core.runfiles import iter_jsonl, read_jsonl
from tests.report_oracle import NaiveCounterSeries, naive_from_hdr, naive_summarize

NAMES = ('hits_total{kind="read",key_class="hot"}', 'hits_total{kind="read",key_class="rest"}',
         'hits_total{kind="write",key_class="hot"}', "plain_total", 'late_total{key="1"}', 'late_total{key="2"}',
         'q_bucket{le="0.001"}', 'q_bucket{le="0.01"}', 'q_bucket{le="+Inf"}', "gauge")


def _samples(seed: int) -> dict[str, list[tuple[float, dict]]]:
    """Awkward scrapes: unsorted, a repeated time, counter resets, series that appear late or vanish,
    values that are not numbers, fractional values (summation order shows)."""
    rng = random.Random(seed)
    by_instance = {}
    for instance in ("a", "b", "c"):
        totals = dict.fromkeys(NAMES, 0.0)
        samples = []
        t = rng.random()
        for n in range(50):
            t += rng.choice((0.9, 1.0, 1.1, 0.0 if n == 30 else 1.0))
            sample = {}
            for name in NAMES:
                if name.startswith("late") and n < 10 + 5 * int(name[-3]):
                    continue
                if name == "plain_total" and 40 <= n < 45:
                    continue  # vanished for a while
                totals[name] = 0.0 if rng.random() < 0.03 else totals[name] + round(rng.random() * 5, 3)
                sample[name] = totals[name]
            sample["text"] = "x"
            sample["flag"] = True
            sample["nothing"] = None
            sample["infinite"] = math.inf
            samples.append((round(t, 3), sample))
        rng.shuffle(samples)
        by_instance[instance] = samples
    return by_instance


@pytest.mark.parametrize("seed", [1, 2])
def test_counter_series_equals_the_old_scan(seed):
    samples = _samples(seed)
    fast, naive = CounterSeries(samples), NaiveCounterSeries(samples)
    records = [{"t": t, "instance": i, "metrics": m} for i, rows in samples.items() for t, m in rows]
    streamed = CounterSeries.from_metrics(iter(records))
    rng = random.Random(seed)
    windows = [(-math.inf, math.inf), (5.0, 20.0), (30.0, 30.0)] + [
        tuple(sorted((rng.uniform(-5, 70), rng.uniform(-5, 70)))) for _ in range(15)] + [
        (s + 0.01, s + 0.99) for s in range(-2, 55)]
    times = sorted(t for rows in samples.values() for t, _ in rows)
    windows += [tuple(sorted(rng.sample(times, 2))) for _ in range(15)]  # bounds on sample times exactly
    queries = [("hits_total", {}), ("hits_total", {"kind": "read"}), ("hits_total", {"key_class": "hot"}),
               ("hits_total", {"kind": "write", "key_class": "hot"}), ("plain_total", {}), ("late_total", {}),
               ("late_total", {"key": "2"}), ("missing", {}), ("hits_total", {"kind": "none"}), ("q_bucket", {}),
               ("text", {}), ("flag", {}), ("nothing", {}), ("infinite", {})]
    for series in (fast, streamed):
        assert series.span() == naive.span()
        assert series.times() == naive.times()
        assert series.samples == {k: [(t, dict(m)) for t, m in v] for k, v in naive.samples.items()}
        assert series.gauge("gauge") == naive.gauge("gauge")
        assert series.samples_with("late_total", 10, 40) == naive.samples_with("late_total", 10, 40)
        assert series.label_values("q_bucket", "le") == naive.label_values("q_bucket", "le")
        assert series.increases_by_label("q_bucket", "le", windows) == naive.increases_by_label("q_bucket", "le",
                                                                                                 windows)
        for name, labels in queries:
            assert series.has(name, **labels) == naive.has(name, **labels), (name, labels)
            assert series.rate(name, **labels) == naive.rate(name, **labels), (name, labels)
            assert series.at_first_sample(name, **labels) == naive.at_first_sample(name, **labels)
            assert list(series._steps(name, labels)) == list(naive._steps(name, labels))  # capacity.py's
            for t_from, t_to in windows:
                got, want = series.increase(name, t_from, t_to, **labels), naive.increase(name, t_from, t_to, **labels)
                assert got == want and type(got) is type(want), (name, labels, t_from, t_to)
                assert series.increase_within(name, t_from, t_to, **labels) == naive.increase_within(
                    name, t_from, t_to, **labels), (name, labels, t_from, t_to)


def test_pg_stats_series_equal_the_old_scan():
    records = [{"t": n + 0.5, "wall": 1e9 + n, "xact_commit": 100 + 3 * n, "calls": None, "exec_ms": 1.5 * n,
                "slot_waits": n % 3, "active": True} for n in range(30)]
    fast, naive = CounterSeries.from_pg_stats(records), NaiveCounterSeries.from_pg_stats(records)
    for name in ("xact_commit", "calls", "exec_ms", "slot_waits", "active", "wall"):
        assert fast.has(name) == naive.has(name)
        assert fast.rate(name) == naive.rate(name)
        assert fast.gauge(name) == naive.gauge(name)
        assert fast.increase_within(name, 3.0, 20.0) == naive.increase_within(name, 3.0, 20.0)


def _histograms():
    rng = random.Random(5)
    empty = new_histogram()
    one = new_histogram()
    one.record_value(1234)
    top = new_histogram()
    top.record_value(59_000_000, 3)
    top.record_value(1)
    spread = new_histogram()
    for _ in range(5000):
        spread.record_value(int(rng.lognormvariate(8, 2)) + 1)
    merged = new_histogram()
    for histogram in (one, top, spread):
        merged.add(histogram)
    decoded = new_histogram()
    decoded.add(type(spread).decode(spread.encode()))
    return [empty, one, top, spread, merged, decoded, type(spread).decode(spread.encode())]


def test_hdr_summaries_equal_hdrh_walks():
    for histogram in _histograms():
        assert summarize(histogram) == naive_summarize(histogram)
    assert summarize(None) is None


def _report(run_dir) -> str:
    result = analysis.analyze_run(run_dir)
    return json.dumps(result, sort_keys=True)


def test_whole_report_equals_the_old_algorithms(tmp_path, monkeypatch):
    """report.json from a realistic run folder (two targets, a fault, histories, HDR per second) is the
    same byte for byte whether the old algorithms or the fast ones compute it."""
    run_dir = write_realistic_run(tmp_path / "run", duration_s=40, rate=20, fault_at_s=15)
    fast = _report(run_dir)
    monkeypatch.setattr(analysis, "CounterSeries", NaiveCounterSeries)
    monkeypatch.setattr(latency, "_from_hdr", naive_from_hdr)
    slow = _report(run_dir)
    assert fast == slow
    assert json.loads(fast)["incident"]["db_latency"]["series"]  # the per-second DB p99 was computed


def _work(tmp_path, seconds: int) -> int:
    run_dir = write_realistic_run(tmp_path / f"run-{seconds}", duration_s=seconds, rate=10, fault_at_s=30,
                                  history_share=0.2)
    for counter in (metrics.WORK, latency.WORK):
        for name in counter:
            counter[name] = 0
    analysis.analyze_run(run_dir)
    return sum(metrics.WORK.values()) + sum(latency.WORK.values())


def test_work_grows_linearly_with_the_run(tmp_path):
    """4x the run's length costs about 4x the work (the old per-second rescan cost 16x)."""
    short, long = _work(tmp_path, 60), _work(tmp_path, 240)
    assert short > 0
    assert 3.0 <= long / short <= 5.0, (short, long)


def test_iter_jsonl_reads_as_read_jsonl(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3, "torn')
    assert list(iter_jsonl(path)) == read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert list(iter_jsonl(tmp_path / "absent.jsonl")) == []
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(CachestormError, match="line 2 is not JSON"):
        list(iter_jsonl(path))
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(CachestormError, match="line 2 is not a JSON object"):
        list(iter_jsonl(path))
    path.write_bytes(b'{"a": 1}\n\xff\xfe\n')
    with pytest.raises(CachestormError, match="not text"):
        list(iter_jsonl(path))


def test_bench_report_runs_small(tmp_path, capsys):
    from cachestorm.bench.report import growth_exponent, main

    result = main(minutes=(0.5, 1.0), rate=10, instances=1, keep=str(tmp_path))
    out = capsys.readouterr().out
    assert [row["minutes"] for row in result["rows"]] == [0.5, 1.0]
    assert all(row["peak_rss_mb"] > 0 and row["total_s"] > 0 for row in result["rows"])
    assert "growth exponent" in out and (tmp_path / "synthetic-1min" / "report.json").exists()
    assert growth_exponent([(1, 2), (2, 4), (4, 8)]) == pytest.approx(1.0)
    assert growth_exponent([(1, 1), (2, 4), (4, 16)]) == pytest.approx(2.0)
    assert growth_exponent([(1, 1)]) is None


def test_bench_report_bad_input_is_one_line():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "cachestorm", "bench", "report", "--minutes", "0"],
                          capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(lines) == 1 and "--minutes" in lines[0]
