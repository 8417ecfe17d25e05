"""One short real run (stack, target, Locust, hot-key expiry): the warm-up prefills without paying a
recompute, and the report carries the incident's numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cachestorm.core.runfolder import RunFolder

CLI = [sys.executable, "-m", "cachestorm"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("incident")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    result = subprocess.run(
        CLI + ["run", "--strategy", "cache-aside", "--experiment", "hot-key-expiry", "--experiment-at", "3s",
               "--duration", "14s", "--rate", "60", "--keys", "3000", "--rows", "3000", "--recompute", "150ms",
               "--ttl", "1h", "--retry", "none", "--out", str(out / "runs"), "--no-report"],
        cwd=out, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [folder] = list((out / "runs").iterdir())
    return folder


def test_warm_up_prefills_every_key_without_a_recompute(run_dir):
    [warm] = [r for r in RunFolder(run_dir).journal_records() if r["what"] == "warm cache"]
    assert warm["outcome"] == "ok" and warm["details"]["filled"] == 3000
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["metrics"]
    reads = sum(v for k, v in first.items() if k.startswith("cachestorm_db_queries_total") and 'kind="read"' in k)
    assert reads <= 5  # the load's first second at most: the prefill itself is one "prefill" query
    assert first.get('cachestorm_db_queries_total{key_class="rest",kind="prefill"}') == 1.0


def test_the_report_tells_the_incident(run_dir):
    from cachestorm.reports.analysis import analyze_run

    analysis = analyze_run(run_dir)
    headline = analysis["headline"]
    for name in ("timeouts", "pool_timeouts", "timeouts_during_fault", "pool_timeouts_during_fault",
                 "attempts_per_request_during_fault"):
        assert isinstance(headline[name], int | float), (name, headline[name])
    assert headline["db_p99_ms_during_fault"] >= 140  # a 150 ms recompute, read from the scraped buckets
    assert isinstance(headline["recovered_on_its_own"], bool)
    [fault] = analysis["faults"]
    assert fault["details"]["applied"]["mode"] == "expire" and fault["details"]["keys"] == 10
    series = analysis["incident"]["db_latency"]
    assert series["series"] and series["pg_slot_waits"]


def _default_run(tmp_path_factory, strategy: str) -> dict:
    """`cachestorm run --strategy S --experiment hot-key-expiry` and nothing else (the experiment's
    `run:` section sets the rest): its headline."""
    from cachestorm.reports.analysis import analyze_run

    out = tmp_path_factory.mktemp("defaults")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    result = subprocess.run(CLI + ["run", "--strategy", strategy, "--experiment", "hot-key-expiry",
                                   "--out", str(out / "runs"), "--no-report"],
                            cwd=out, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [folder] = list((out / "runs").iterdir())
    return analyze_run(folder)["headline"]


def test_the_incident_on_defaults_unprotected(tmp_path_factory):
    """Issue 14's bar for the story on defaults: the pool runs dry or clients time out, retries
    amplify in the fault window, the DB's own latency climbs, and it is over within seconds."""
    headline = _default_run(tmp_path_factory, "cache-aside")
    assert headline["baseline_healthy"] is True, headline["baseline"]  # the fault did it, not the load
    assert headline["db_ground_truth"]["agrees"], headline["db_ground_truth"]  # PostgreSQL confirms
    # the herd: far more reads fell through to the DB path than got a connection and ran
    assert headline["db_load_attempts_per_expiry"] >= 3 * headline["db_loads_per_expiry"], headline
    assert headline["pool_timeouts"] + headline["timeouts"] > 0
    assert headline["attempts_per_request_during_fault"] >= 1.5, headline
    assert headline["db_p99_ms_during_fault"] >= 3 * headline["db_p99_ms_before_fault"], headline
    assert headline["recovered_on_its_own"] is True and headline["time_to_recover_s"] < 10, headline


def test_the_incident_on_defaults_with_a_lock(tmp_path_factory):
    headline = _default_run(tmp_path_factory, "cache-aside+lock")
    assert headline["baseline_healthy"] is True, headline["baseline"]
    assert headline["db_ground_truth"]["agrees"], headline["db_ground_truth"]
    assert headline["db_loads_per_expiry"] <= 1.5, headline
    assert headline["db_load_attempts_per_expiry"] <= 1.5, headline  # nothing refused at the pool either
    assert headline["pool_timeouts"] + headline["timeouts"] == 0, headline
