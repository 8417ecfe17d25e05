"""One hit ratio: the chaos probes and the reports read the same scrapes the same way
(cachestorm/core/hitratio.py): lookups served from the cache without a DB load / lookups."""

from __future__ import annotations

import json

import pytest
from cachestorm.chaos.probes import LiveNumbers
from cachestorm.reports.cachestats import analyze_cache
from cachestorm.reports.metrics import CounterSeries

PER_SECOND = {"hit": 50.0, "stale": 20.0, "negative": 5.0, "miss": 15.0, "fallback": 10.0, "bypass": 100.0}
EXPECTED = (50 + 20 + 5) / (50 + 20 + 5 + 15 + 10)   # bypass reads never looked in the cache


def records() -> list[dict]:
    return [{"t": float(t), "wall": 1000.0 + t, "instance": "a", "metrics": {
        f'cachestorm_cache_results_total{{result="{result}",key_class="hot"}}': rate * t
        for result, rate in PER_SECOND.items()}} for t in range(11)]


def test_probes_and_reports_agree_on_the_hit_ratio(tmp_path):
    with open(tmp_path / "metrics.jsonl", "w") as out:
        out.writelines(json.dumps(record) + "\n" for record in records())
    numbers = LiveNumbers(tmp_path)
    numbers.refresh()
    cache = analyze_cache(CounterSeries.from_metrics(records()), [])
    assert numbers.value("hit_ratio", 10, 5) == pytest.approx(EXPECTED)
    assert cache["hit_ratio"] == pytest.approx(EXPECTED)
    assert cache["hit_ratio_by_key_class"]["hot"] == pytest.approx(EXPECTED)
    assert all(point["hit_ratio"] == pytest.approx(EXPECTED) for point in cache["series"])
    assert cache["fresh_hit_ratio"] == pytest.approx(50 / 100)   # the other figure, under its own name
