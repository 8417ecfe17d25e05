"""Locust (subprocess) against the real reference targets on the real embedded stack."""

from __future__ import annotations

from collections import Counter

import pytest
from cachestorm.targets.settings import TargetSettings
from cachestorm.targets.testing import running_target
from cachestorm.traffic.recording import read_history

from tests.test_traffic_locust import latency_lines, run_locust

pytestmark = pytest.mark.slow


def test_profiles_against_the_cache_aside_target(stack, redis_client, tmp_path):
    settings = TargetSettings(domain="profiles", strategy="cache-aside", redis_url=stack.redis_proxy_url,
                              postgres_url=stack.postgres_proxy_url, rows=200, recompute_ms=1, instance_id="lt1")
    with running_target(settings) as target:
        result = run_locust("profiles", target.base_url, "-u", "4", "-r", "4", "-t", "4s", "--run-dir", str(tmp_path),
                            "--keys", "200", "--missing-share", "0.1", "--history-sample", "0.1", "--seed", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_history(next((tmp_path / "histories").glob("*.tsv")))
    reads = [r for r in rows if r["op"] == "read"]
    missing = [r for r in reads if int(r["key"]) > 200]
    assert missing and {r["status"] for r in missing} == {"404"}
    found = [r for r in reads if int(r["key"]) <= 200]
    assert {r["status"] for r in found} == {"200"} and Counter(r["source"] for r in found)["hit"] > 0
    writes = [r for r in rows if r["op"] == "write"]
    assert writes and all(r["status"] == "200" and int(r["version"]) >= 1 for r in writes)
    merged = latency_lines(tmp_path / "latency" / "merged.jsonl")
    assert sum(x.get("counts", {}).get("requests", 0) for x in merged) > 100


def test_counters_flush_at_stop_against_write_behind(stack, redis_client, tmp_path):
    settings = TargetSettings(domain="counters", strategy="write-behind", redis_url=stack.redis_proxy_url,
                              postgres_url=stack.postgres_proxy_url, rows=50, recompute_ms=1, instance_id="lt2",
                              flush_interval=60.0)
    with running_target(settings) as target:
        result = run_locust("counters", target.base_url, "-u", "2", "-r", "2", "-t", "3s", "--run-dir", str(tmp_path),
                            "--keys", "50", "--hot-keys", "50", "--seed", "6")
    assert result.returncode == 0, result.stderr[-2000:]
    flush = [line for line in result.stderr.splitlines() if "cachestorm counters flush" in line]
    assert flush and '"flushed"' in flush[0], result.stderr[-1000:]
    rows = read_history(next((tmp_path / "histories").glob("*.tsv")))
    incr = [r for r in rows if r["op"] == "incr"]
    assert incr and all(r["status"] == "200" and r["value"].isdigit() for r in incr)
