"""cachestorm.traffic.chaos_hooks inside real Locust runs (subprocesses): once per test, rolled back at the end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cachestorm.chaos.ledger import Ledger

from cachestorm.core.runfolder import RunFolder
from cachestorm.stack import save_state

LOCUSTFILE = """\
import cachestorm.traffic.chaos_hooks  # noqa: F401
from locust import User, constant, task


class Idle(User):
    wait_time = constant(0.2)

    @task
    def nothing(self):
        pass
"""

EXPERIMENT = """\
name: locust-e2e
steady_state:
  interval: 250ms
  probes:
    - {name: db load bounded, metric: db_queries_per_s, max: 100, window: 1s}
method:
  - {fault: redis-latency, at: 0.5s, for: 60s, settings: {latency_ms: 5}}
deviation: DEVIATION
"""


@pytest.fixture()
def workdir(stack, tmp_path, proxy_client):
    save_state(stack, tmp_path)
    (tmp_path / "idle.py").write_text(LOCUSTFILE)
    return tmp_path


def locust(workdir, env, deviation: str, *extra: str) -> subprocess.Popen:
    (workdir / "exp.yaml").write_text(EXPERIMENT.replace("DEVIATION", deviation))
    argv = [sys.executable, "-m", "locust", "-f", "idle.py", "--headless", "--experiment", "exp.yaml",
            "--run-dir", "run", "--chaos-ledger", "ledger.jsonl", "--only-summary", *extra]
    return subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def fault_records(workdir) -> list[dict]:
    return [r for r in RunFolder(workdir / "run").journal_records() if r["kind"] == "fault"]


def test_experiment_runs_with_the_test_and_is_rolled_back_at_its_end(workdir, cli_env, proxy_client):
    """An idle user and no target: the toxic had no traffic to act on and the probe no data, so the
    run says so and exits 1 (no data is not a pass)."""
    process = locust(workdir, cli_env, "continue", "-u", "1", "-r", "1", "-t", "4s")
    try:
        deadline = time.monotonic() + 30
        while not proxy_client.toxics("redis"):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, out
    assert "hypothesis not_verified" in out and "no data for probe db load bounded (before)" in out
    assert "redis-latency at 0.5 s reached 0 connections (latency toxic): no data passed proxy redis" in out
    assert proxy_client.toxics("redis") == [] and Ledger(workdir / "ledger.jsonl").active() == []
    records = fault_records(workdir)
    assert [(r["details"]["fault"], r["details"]["ended_by"]) for r in records] == [("redis-latency", "end of run")]
    assert records[0]["outcome"] == "failed" and records[0]["details"]["touched"]["count"] == 0


def test_distributed_abort_runs_once_and_stops_the_load(workdir, cli_env, proxy_client):
    # synthetic scrapes: 10 DB queries/s, then 1,000/s from t=1.5 s (after the fault is applied at 0.5 s)
    lines, total = [], 0.0
    for quarter in range(-40, 2000):
        total += (1000 if quarter >= 6 else 10) / 4
        lines.append(json.dumps({"t": quarter / 4, "wall": 0, "instance": "a",
                                 "metrics": {'cachestorm_db_queries_total{kind="read",key_class="hot"}': total}}))
    (workdir / "run").mkdir()
    (workdir / "run" / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    process = locust(workdir, cli_env, "abort", "--processes", "2", "-u", "2", "-r", "2", "-t", "60s")
    try:
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert time.monotonic() - started < 40, out      # stopped long before -t 60s
    assert "deviated" in out
    assert proxy_client.toxics("redis") == [] and Ledger(workdir / "ledger.jsonl").active() == []
    outcomes = [(r["details"]["phase"], r["outcome"]) for r in RunFolder(workdir / "run").journal_records()
                if r["kind"] == "probe"]
    assert outcomes[0] == ("before", "ok") and outcomes[-1] == ("during", "deviated")
    records = fault_records(workdir)                   # once, on the master: never per worker
    assert [(r["details"]["fault"], r["details"]["ended_by"]) for r in records] == [
        ("redis-latency", "hypothesis deviated (abort)")]


REAL = """\
name: plain-locust
steady_state:
  interval: 500ms
  settle: 2s
  probes:
    - {name: p99 stays bounded, metric: p99_ms, max: 5000, window: 2s}
    - {name: server errors stay rare, metric: error_rate, max: 0.5, window: 2s}
    - {name: hit ratio, metric: hit_ratio, min: 0.05, window: 2s, phases: [before, after]}
method:
  - {fault: hot-key-expiry-repeated, at: 3s, for: 2s, settings: {count: 5, every_ms: 500}}
run: {duration: 9s, rate: 60, ttl: 1h, retry: "naive:2"}
"""


@pytest.mark.slow
def test_plain_locust_probes_have_data_and_the_run_defaults_apply(stack, workdir, cli_env, proxy_client):
    """`locust -f locustfiles/profiles.py --experiment ...` on a real target: the counter probes read the
    target's /metrics (sampled by the hooks), the p99 probe the locustfile's latency files; the
    experiment's `run:` sets -t and --retry, what the user typed (--rate) wins, the target's
    settings (ttl) are named as not applied."""
    from cachestorm.targets.settings import TargetSettings
    from cachestorm.targets.testing import flush_redis, running_target

    (workdir / "exp.yaml").write_text(REAL)
    settings = TargetSettings(domain="profiles", strategy="cache-aside", redis_url=stack.redis_proxy_url,
                              postgres_url=stack.postgres_url, rows=500, ttl=3600, recompute_ms=5)
    flush_redis(stack.redis_url)
    locustfile = str(Path(__file__).resolve().parent.parent / "locustfiles" / "profiles.py")
    with running_target(settings) as target:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "locust", "-f", locustfile, "--headless", "--host", target.base_url,
             "--experiment", "exp.yaml", "--chaos-ledger", "ledger.jsonl", "--only-summary", "-u", "4", "-r", "4",
             "--rate", "40", "--keys", "500", "--hot-keys", "5"],
            cwd=workdir, env=cli_env, capture_output=True, text=True, timeout=90)
        took = time.monotonic() - started
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "run: defaults applied: duration=9s, retry=naive:2; kept as typed: rate=40.0" in out
    assert "not applied (the target's or the stack's settings: start the target with them): ttl=1h" in out
    assert 9 <= took < 40, out          # -t came from run: duration
    assert "hypothesis held" in out
    folders = list((workdir / ".cachestorm" / "chaos").glob("*-locust-plain-locust"))
    assert len(folders) == 1
    records = RunFolder(folders[0]).journal_records()
    probes = [r for r in records if r["kind"] == "probe"]
    by_metric = {}
    for record in probes:
        by_metric.setdefault(record["details"]["metric"], set()).add(record["outcome"])
    assert by_metric == {"p99_ms": {"ok"}, "error_rate": {"ok"}, "hit_ratio": {"ok"}}, probes
    faults = [r for r in records if r["kind"] == "fault"]
    assert faults[0]["outcome"] == "ok" and faults[0]["details"]["touched"]["count"] > 0
    assert [(r["outcome"], r["details"]["hypothesis"]) for r in records if r["kind"] == "hypothesis"] == [
        ("ok", "held")]
    assert proxy_client.toxics("redis") == [] and Ledger(workdir / "ledger.jsonl").active() == []
