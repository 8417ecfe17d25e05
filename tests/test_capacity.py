"""Capacity: the step analysis on synthetic run folders with known answers, and one real short run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cachestorm.reports.capacity import analyze_capacity
from cachestorm.traffic.models.shapes import Step
from hdrh.histogram import HdrHistogram

from cachestorm.core.errors import CachestormError
from cachestorm.core.runfolder import RunFolder

STARTED_AT = 1_700_000_000.0
JOURNAL_LOAD_T = 1.0   # the conductor's load record
FIRST_DATA_T = 2.0     # Locust took a second to boot: the steps start here
HOLD = 5
CLI = [sys.executable, "-m", "cachestorm"]


def write_step_run(run_dir: Path, max_rate: float, steps: list[dict], db_per_request: float = 0.05) -> Path:
    """A run folder of an open-model step load; each step dict: achieved (fraction of offered), p99_ms, errors.

    Every step's first second is a bad transition second (p99 5 s) that the analysis must skip; DB reads
    run at `db_per_request` per completed request, scraped at t = k + 0.5 (not aligned to the seconds).
    """
    (run_dir / "latency").mkdir(parents=True)
    (run_dir / "locust").mkdir()
    settings = {"strategy": "cache-aside", "domain": "profiles", "rate": max_rate, "shape": "step",
                "shape_args": f"steps={len(steps)},hold={HOLD}"}
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_dir.name, "label": run_dir.name,
                                                  "settings": settings, "started_at": STARTED_AT,
                                                  "ended_at": STARTED_AT + FIRST_DATA_T + HOLD * len(steps) + 1}))
    end = FIRST_DATA_T + HOLD * len(steps)
    (run_dir / "journal.jsonl").write_text(json.dumps({"what": "load", "kind": "load", "t_start": JOURNAL_LOAD_T,
                                                       "t_end": end, "outcome": "ok", "details": {}}) + "\n")
    RunFolder(run_dir).write_step_plan(max_rate, Step(steps=len(steps), hold=HOLD).levels(), HOLD)  # as a run does
    latency, history, scrapes, pg = [], [], [], []
    total_requests = total_failures = db = 0.0
    per_second_db = {}
    for index, step in enumerate(steps):
        offered = max_rate * (index + 1) / len(steps)
        for second in range(HOLD):
            t = FIRST_DATA_T + index * HOLD + second
            requests = int(round(offered * step["achieved"]))
            slow_ms = 5000 if second == 0 else step["p99_ms"]
            histogram = HdrHistogram(1, 60_000_000, 3)
            histogram.record_value(2000, requests - requests * 3 // 100)
            histogram.record_value(int(slow_ms * 1000), requests * 3 // 100)
            latency.append({"t": t, "wall": STARTED_AT + t, "interval_s": 1.0, "worker": "merged", "kind": "all",
                            "hist": histogram.encode().decode(),
                            "counts": {"requests": requests, "attempts": requests, "sent": int(offered),
                                       "late": 0, "dropped": 0}})
            total_requests += requests
            total_failures += requests * step.get("errors", 0.0)
            history.append((t + 1, total_requests, total_failures))
            per_second_db[t] = requests * db_per_request
    with (run_dir / "latency" / "merged.jsonl").open("w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in latency)
    rows = ["Timestamp,User Count,Type,Name,Requests/s,Failures/s,Total Request Count,Total Failure Count"]
    rows += [f"{int(STARTED_AT + t)},1,,Aggregated,0,0,{int(n)},{int(f)}" for t, n, f in history]
    (run_dir / "locust" / "stats_stats_history.csv").write_text("\n".join(rows) + "\n")
    for k in range(int(end) + 2):
        t = k + 0.5
        # the DB work of second s happens evenly over [s, s + 1): half of two seconds per scrape interval
        db += 0.5 * per_second_db.get(k - 1, 0.0) + 0.5 * per_second_db.get(k, 0.0)
        scrapes.append({"t": t, "wall": STARTED_AT + t, "instance": "target-1",
                        "metrics": {'cachestorm_db_queries_total{kind="read",key_class="other"}': db}})
        pg.append({"t": t, "wall": STARTED_AT + t, "xact_commit": 1000 + 2 * db, "calls": None})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in scrapes))
    (run_dir / "pg_stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pg))
    return run_dir


def test_known_knee_skips_transitions_and_boot_lag(tmp_path):
    run_dir = write_step_run(tmp_path / "knee", 400, [
        {"achieved": 1.0, "p99_ms": 5}, {"achieved": 1.0, "p99_ms": 10},
        {"achieved": 1.0, "p99_ms": 40}, {"achieved": 1.0, "p99_ms": 300}])
    capacity = analyze_capacity(run_dir, slo_p99_ms=100, max_error_rate=0.01)
    steps = capacity["steps"]
    assert [s["offered_per_s"] for s in steps] == [100, 200, 300, 400]
    # the load starts with the first latency data (Locust's boot), not the journal's earlier record
    assert capacity["load_start_t"] == FIRST_DATA_T and capacity["load_start_source"] == "latency"
    # 4 whole seconds per step; the 5 s transition second is not in any of them
    assert [s["seconds"] for s in steps] == [4, 4, 4, 4]
    assert [round(s["p99_ms"]) for s in steps] == [5, 10, 40, 300]
    assert [round(s["achieved_per_s"]) for s in steps] == [100, 200, 300, 400]
    assert all(s["error_rate"] == 0 for s in steps)
    for step in steps:  # 0.05 DB reads per request, prorated over misaligned scrapes; PostgreSQL 2x
        assert step["db_queries_per_1k"] == pytest.approx(50, rel=0.02)
        assert step["pg_xact_commit_per_1k"] == pytest.approx(100, rel=0.02)
    assert [s["passed"] for s in steps] == [True, True, True, False]
    assert capacity["knee"]["step"] == 2 and capacity["knee"]["achieved_per_s"] == pytest.approx(300)
    assert "p99 300 ms > 100 ms" in steps[3]["reasons"][0]
    assert capacity["first_failure"]["step"] == 3


def test_no_step_passes_says_so(tmp_path):
    run_dir = write_step_run(tmp_path / "none", 300, [
        {"achieved": 1.0, "p99_ms": 150}, {"achieved": 1.0, "p99_ms": 5}, {"achieved": 1.0, "p99_ms": 5}])
    capacity = analyze_capacity(run_dir, slo_p99_ms=100, max_error_rate=0.01)
    # a later passing step does not make a knee: the first step already broke the SLO
    assert capacity["knee"] is None
    assert capacity["note"].startswith("no knee: even the first step failed")
    assert capacity["steps"][1]["passed"]


def test_achieved_below_offered_and_errors_fail_a_step(tmp_path):
    run_dir = write_step_run(tmp_path / "saturated", 400, [
        {"achieved": 1.0, "p99_ms": 5}, {"achieved": 0.97, "p99_ms": 5},
        {"achieved": 0.7, "p99_ms": 5}, {"achieved": 1.0, "p99_ms": 5, "errors": 0.05}])
    capacity = analyze_capacity(run_dir, slo_p99_ms=100, max_error_rate=0.01)
    steps = capacity["steps"]
    assert steps[1]["passed"]  # 97% of offered is within the 95% tolerance
    assert not steps[2]["passed"] and steps[2]["achieved_per_s"] == pytest.approx(210)
    assert any("achieved 210/s < 95% of offered 300/s" in r for r in steps[2]["reasons"])
    assert steps[3]["error_rate"] == pytest.approx(0.05, abs=0.002) and not steps[3]["passed"]
    assert capacity["knee"]["step"] == 1
    assert capacity["error_rate_source"] == "locust"


def test_not_a_step_run_is_a_clear_error(tmp_path):
    """A run without a recorded step plan (another load, or an older version): one line, no rebuilding."""
    run_dir = write_step_run(tmp_path / "r", 100, [{"achieved": 1.0, "p99_ms": 5}])
    RunFolder(run_dir).step_plan_path.unlink()
    with pytest.raises(CachestormError, match="not a capacity run.*older version"):
        analyze_capacity(run_dir, 100, 0.01)


@pytest.mark.parametrize("plan", ['{"max_rate": 100, "levels": "x", "hold_s": 5}', '{"levels": [1]}', "[1, 2]",
                                  '{"max_rate": 100, "levels": [], "hold_s": 5}', '{"max_rate'])
def test_damaged_step_plan_is_one_line(tmp_path, plan):
    run_dir = write_step_run(tmp_path / "r", 100, [{"achieved": 1.0, "p99_ms": 5}])
    RunFolder(run_dir).step_plan_path.write_text(plan)
    with pytest.raises(CachestormError, match=RunFolder.STEP_PLAN) as caught:
        analyze_capacity(run_dir, 100, 0.01)
    assert "\n" not in str(caught.value)


def test_capacity_renders_into_run_report_and_comparison(tmp_path):
    from cachestorm.reports.render import render_capacity_comparison, write_run_reports
    from cachestorm.reports.synthetic import write_synthetic_run

    capacities = []
    for name, p99 in (("a", 300), ("b", 50)):
        run_dir = write_step_run(tmp_path / name, 200, [{"achieved": 1.0, "p99_ms": 5},
                                                        {"achieved": 1.0, "p99_ms": p99}])
        capacity = analyze_capacity(run_dir, 100, 0.01)
        capacity["run"]["strategy"] = f"strategy-{name}"
        capacities.append(capacity)
    paths = render_capacity_comparison(capacities, tmp_path / "out")
    html = (tmp_path / "out" / "capacity.html").read_text()
    assert html.count('data-chart="capacity-p99"') == 1 and 'data-chart="capacity-db"' in html
    assert "strategy-a" in html and "strategy-b" in html and "http" not in html.split("<svg", 1)[0].lower()
    md = (tmp_path / "out" / "capacity.md").read_text()
    assert "| strategy-a | 100 req/s |" in md and "| strategy-b | 200 req/s |" in md
    assert {p.name for p in paths} == {"capacity.html", "capacity.md", "capacity.json"}

    # a normal run folder with a capacity.json gets a capacity section in report.html and summary.md
    run_dir = write_synthetic_run(tmp_path / "synthetic")
    (run_dir / "capacity.json").write_text(json.dumps(capacities[1]))
    from cachestorm.reports.analysis import analyze_run

    write_run_reports(analyze_run(run_dir), run_dir)
    assert "<h2>Capacity</h2>" in (run_dir / "report.html").read_text()
    assert "#### Capacity" in (run_dir / "summary.md").read_text()


@pytest.mark.slow
def test_real_capacity_run_end_to_end(tmp_path, cli_env):
    result = subprocess.run(
        CLI + ["capacity", "--strategy", "cache-aside", "--max-rate", "150", "--steps", "3", "--hold", "4s",
               "--keys", "200", "--rows", "300", "--recompute", "2ms", "--slo-p99", "100ms",
               "--out", str(tmp_path / "runs")],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [run_dir] = list((tmp_path / "runs").iterdir())
    capacity = json.loads((run_dir / "capacity.json").read_text())
    steps = capacity["steps"]
    assert len(steps) == 3
    offered = [s["offered_per_s"] for s in steps]
    assert offered == sorted(offered) and offered[-1] == 150 and offered[0] == pytest.approx(50)
    assert all(s["seconds"] >= 2 and s["requests"] > 0 for s in steps)
    for step in steps:  # the open model keeps pace at these low rates
        assert step["achieved_per_s"] == pytest.approx(step["offered_per_s"], rel=0.15)
        assert step["db_queries_per_1k"] is not None and step["pg_xact_commit_per_1k"] is not None
    # the knee is the last step of the unbroken run of passing steps from the first
    passing = 0
    while passing < len(steps) and steps[passing]["passed"]:
        passing += 1
    if passing:
        assert capacity["knee"]["step"] == passing - 1 and capacity["note"].startswith("knee at step")
    else:
        assert capacity["knee"] is None and capacity["note"].startswith("no knee")
    assert "knee" in result.stdout
    assert "<h2>Capacity</h2>" in (run_dir / "report.html").read_text()
