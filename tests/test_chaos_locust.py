"""cachestorm.traffic.chaos_hooks inside real Locust runs (subprocesses): once per test, rolled back at the end."""

from __future__ import annotations

import json
import subprocess
import sys
import time

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
    assert process.returncode == 0, out
    assert proxy_client.toxics("redis") == [] and Ledger(workdir / "ledger.jsonl").active() == []
    records = fault_records(workdir)
    assert [(r["details"]["fault"], r["details"]["ended_by"]) for r in records] == [("redis-latency", "end of run")]
    assert records[0]["outcome"] == "ok"


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
