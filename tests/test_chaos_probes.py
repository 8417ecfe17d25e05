"""Live probe numbers from synthetic run-folder files (metrics.jsonl, latency/*.jsonl)."""

from __future__ import annotations

import json

import pytest
from cachestorm.chaos.probes import LiveNumbers, totals
from hdrh.histogram import HdrHistogram


def scrape(t: float, instance: str, requests: float, errors: float, db: float, hits: float, misses: float) -> dict:
    return {"t": t, "wall": 1000 + t, "instance": instance, "metrics": {
        'cachestorm_requests_total{route="/profiles/{id}",status="200"}': requests - errors,
        'cachestorm_requests_total{route="/profiles/{id}",status="503"}': errors,
        'cachestorm_db_queries_total{kind="read",key_class="hot"}': db,
        'cachestorm_cache_results_total{result="hit",key_class="hot"}': hits,
        'cachestorm_cache_results_total{result="miss",key_class="hot"}': misses,
        'cachestorm_cache_results_total{result="bypass",key_class="cold"}': 1000.0,
    }}


def hist(values_us: list[int]) -> str:
    h = HdrHistogram(1, 60_000_000, 3)
    for value in values_us:
        h.record_value(value)
    return h.encode().decode()


def write_lines(path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")


def test_counter_numbers_over_a_window(tmp_path):
    # two instances, each 100 req/s with 1 error/s, 10 DB queries/s, 90 hits + 10 misses per s
    write_lines(tmp_path / "metrics.jsonl", [
        scrape(t, inst, 100 * t, 1 * t, 10 * t, 90 * t, 10 * t) for t in range(0, 11) for inst in ("a", "b")])
    numbers = LiveNumbers(tmp_path)
    numbers.refresh()
    assert numbers.value("requests_per_s", 10, 5) == pytest.approx(200)
    assert numbers.value("db_queries_per_s", 10, 5) == pytest.approx(20)
    assert numbers.value("error_rate", 10, 5) == pytest.approx(0.01)
    assert numbers.value("hit_ratio", 10, 5) == pytest.approx(0.9)   # bypass is not a lookup
    assert numbers.value("requests_per_s", -5, 5) is None            # no data yet


def test_new_lines_are_picked_up_and_a_torn_line_waits(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, [scrape(t, "a", 10 * t, 0, 0, 0, 0) for t in range(0, 3)])
    numbers = LiveNumbers(tmp_path)
    numbers.refresh()
    assert numbers.value("requests_per_s", 2, 2) == pytest.approx(10)
    # the DB storm: 100 queries/s from t=3, and half a line written so far
    line = json.dumps(scrape(3, "a", 30, 0, 100, 0, 0))
    with open(path, "a") as out:
        out.write(line[:20])
    numbers.refresh()
    with open(path, "a") as out:
        out.write(line[20:] + "\n" + json.dumps(scrape(4, "a", 40, 0, 200, 0, 0)) + "\n")
    numbers.refresh()
    assert numbers.value("db_queries_per_s", 4, 2) == pytest.approx(100)
    # a target that restarted: its counters start again from 0
    write_lines(path, [scrape(5, "a", 5, 0, 0, 0, 0)])
    numbers.refresh()
    assert numbers.value("requests_per_s", 5, 1) == pytest.approx(5)


def test_failed_scrapes_are_skipped(tmp_path):
    write_lines(tmp_path / "metrics.jsonl", [scrape(0, "a", 0, 0, 0, 0, 0), {"t": 1, "instance": "a", "error": "x"},
                                             scrape(2, "a", 20, 20, 0, 0, 0)])
    numbers = LiveNumbers(tmp_path)
    numbers.refresh()
    assert numbers.value("error_rate", 2, 2) == pytest.approx(1.0)


def test_latency_percentiles_from_hdr_histograms(tmp_path):
    fast = list(range(1000, 2000))           # 1..2 ms
    slow = [500_000] * 100                    # 500 ms: 3% of the window
    write_lines(tmp_path / "latency" / "w1-1.jsonl", [
        {"t": t, "wall": 1000 + t, "interval_s": 1.0, "worker": "w1", "kind": "all",
         "hist": hist(fast + (slow if t == 8 else []))} for t in range(0, 10)])
    write_lines(tmp_path / "latency" / "merged.jsonl", [
        {"t": 9, "kind": "all", "hist": hist([60_000_000])}])  # ignored: written after the run
    numbers = LiveNumbers(tmp_path)
    numbers.refresh()
    assert numbers.value("p99_ms", 5, 3) == pytest.approx(2.0, rel=0.01)      # t in [2, 5)
    assert numbers.value("p99_ms", 10, 3) == pytest.approx(500, rel=0.01)     # the slow second inside
    assert numbers.value("p50_ms", 10, 3) == pytest.approx(1.55, rel=0.05)
    assert numbers.value("max_ms", 10, 3) == pytest.approx(500, rel=0.01)
    assert numbers.value("p99_ms", 100, 3) is None


def test_totals_reads_label_sets():
    got = totals({'cachestorm_cache_results_total{result="stale",key_class="hot"}': 3.0,
                  'cachestorm_cache_results_total{result="fallback",key_class="hot"}': 1.0,
                  'cachestorm_requests_total{route="/x",status="500"}': 2.0})
    assert got == {"requests": 2.0, "errors": 2.0, "db_queries": 0.0, "hits": 3.0, "lookups": 4.0}
