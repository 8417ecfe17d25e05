"""Renderers: files written, offline-only HTML, and a real headless Chromium rendering it without errors."""

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
from cachestorm.reports import compare_runs, render_comparison, render_run
from cachestorm.reports.analysis import analyze_run
from cachestorm.reports.html import _page
from cachestorm.reports.synthetic import write_synthetic_run

CHROMIUM = "/usr/bin/chromium"
RUN_CHARTS = 5  # latency, DB, hit ratio, errors, staleness


@pytest.fixture
def two_runs(tmp_path):
    baseline = write_synthetic_run(tmp_path / "baseline")
    better = write_synthetic_run(tmp_path / "xfetch", strategy="xfetch", fault_db_per_s=30.0, fault_ms=10.0,
                                 stale_reads=0)
    return baseline, better


def test_render_run_writes_html_markdown_json(two_runs):
    baseline, _ = two_runs
    paths = render_run(baseline)
    assert [p.name for p in paths] == ["report.html", "summary.md", "report.json"]
    report = json.loads((baseline / "report.json").read_text())
    assert report["headline"]["db_amplification"] == pytest.approx(21.5)
    summary = (baseline / "summary.md").read_text()
    assert "| DB amplification (peak ÷ max(steady, 1 q/s)) | 21.5 x |" in summary and len(summary) < 65_000  # fits a PR comment
    html = (baseline / "report.html").read_text()
    assert html.count("<svg") == RUN_CHARTS and "expire hot keys" in html
    assert "probe hit ratio recovers" in html


def test_html_never_fetches_anything(two_runs, tmp_path):
    paths = render_run(two_runs[0]) + render_comparison(list(two_runs), tmp_path / "cmp")
    for path in (p for p in paths if p.suffix == ".html"):
        html = path.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I), path
        assert "@import" not in html and "url(" not in html and "<link" not in html and "<img" not in html
        assert "fetch(" not in html and "XMLHttpRequest" not in html


def test_comparison_marks_winners_and_regressions(two_runs, tmp_path):
    baseline, better = two_runs
    html_path, md_path, json_path = render_comparison([baseline, better], tmp_path / "cmp")
    html = html_path.read_text()
    assert html.count("class=winner") >= 4
    deltas = json.loads(json_path.read_text())["deltas"][0]
    # counts and the window's p99 are shown, but rates and the worst second decide
    assert {"p99_ms_fault_worst_second", "db_amplification", "stale_reads_per_1k"} <= set(deltas["improvements"])
    # one op fewer in the synthetic run: error rate 2/44 vs 2/45, within noise (0.002 points): no regression
    assert deltas["regressions"] == []
    reverse = compare_runs(analyze_run(better), analyze_run(baseline))
    assert {"p99_ms_fault_worst_second", "db_amplification", "stale_reads_per_1k"} <= set(reverse["regressions"])
    assert not {"p99_ms_during_fault", "stale_reads"} & set(reverse["regressions"])
    row = next(r for r in reverse["metrics"] if r["metric"] == "db_amplification")
    assert row["baseline"] == pytest.approx(4.5) and row["candidate"] == pytest.approx(21.5)
    assert row["relative"] == pytest.approx(17 / 4.5)
    assert "**" in md_path.read_text()


def _chromium_dom(html_path: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="cachestorm-chromium-") as profile:
        completed = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--dump-dom", html_path.resolve().as_uri()],
            capture_output=True, text=True, timeout=90)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def _require_chromium():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: install the chromium package")
        pytest.skip(f"{CHROMIUM} not installed")


def _body(dom: str) -> str:
    match = re.search(r"<body[^>]*>", dom)
    assert match, dom[:500]
    return match.group(0)


def test_chromium_renders_run_and_comparison_without_script_errors(two_runs, tmp_path):
    _require_chromium()
    run_html = render_run(two_runs[0])[0]
    comparison_html = render_comparison(list(two_runs), tmp_path / "cmp")[0]
    for path, charts in ((run_html, RUN_CHARTS), (comparison_html, 5)):
        dom = _chromium_dom(path)
        body = _body(dom)
        assert "data-render-error" not in body, body
        assert f'data-render-ok="{charts}"' in body, body
        assert len(re.findall(r"<svg\b", dom)) == charts
        assert "<polyline" in dom


def test_chromium_harness_catches_a_script_error(tmp_path):
    _require_chromium()
    broken = tmp_path / "broken.html"
    broken.write_text(_page("broken", "<p>x</p><script>definitelyNotDefined();</script>"))
    body = _body(_chromium_dom(broken))
    assert "data-render-error" in body and "definitelyNotDefined" in body


def test_chromium_missing_is_only_a_skip_outside_ci(monkeypatch):
    monkeypatch.setitem(_require_chromium.__globals__, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        _require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        _require_chromium()


def test_render_run_on_a_sparse_run_folder(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"settings": {"strategy": "none"}}))
    paths = render_run(tmp_path)
    assert all(p.exists() for p in paths)
    assert "no data" in paths[0].read_text()


def test_compare_handles_all_nines_and_zero_baselines():
    base = {"run": {"label": "a"}, "headline": {"nines_within_1s": "all", "lost_writes": 0, "p99_ms": 10.0,
                                                "hit_ratio": 0.9}}
    cand = {"run": {"label": "b"}, "headline": {"nines_within_1s": 2.5, "lost_writes": 1, "p99_ms": 10.4,
                                                "hit_ratio": 0.95}}
    result = compare_runs(base, cand)
    rows = {r["metric"]: r for r in result["metrics"]}
    assert rows["nines_within_1s"]["regression"] and rows["nines_within_1s"]["delta"] is None
    assert rows["lost_writes"]["regression"] and rows["lost_writes"]["relative"] is None  # any loss counts
    assert not rows["p99_ms"]["regression"] and not rows["p99_ms"]["improvement"]  # 4%: noise
    assert rows["hit_ratio"]["improvement"]
    json.dumps(result, allow_nan=False)


# ---------------------------------------------------------------- beyond noise: one rule for compare, pages, gate

def _headlines(**values) -> list[dict]:
    return [{"run": {"label": f"r{n}"}, "headline": {name: pair[n] for name, pair in values.items()}}
            for n in range(2)]


def test_best_and_regression_only_beyond_noise():
    from cachestorm.reports.compare import judge, winners

    # the cases: the unprotected run "best" for p50 and DB steady, stale serves 0, and a red
    # "regression" for max staleness 8.4 -> 9.6 s within a 3,600 s bound
    a, b = _headlines(p50_ms=(2.77, 3.1), db_steady_queries_per_s=(0.5, 0.7), stale_serves=(0, 120),
                      max_staleness_s=(8.4, 9.6), pool_timeouts=(716, 0), db_loads_per_expiry=(15.9, 0.9),
                      error_rate=(0.2, 0.0))
    best = winners([a["headline"], b["headline"]])
    assert not {"p50_ms", "db_steady_queries_per_s", "stale_serves", "max_staleness_s"} & set(best), best
    assert best["pool_timeouts"] == best["db_loads_per_expiry"] == best["error_rate"] == [1]
    result = compare_runs(a, b)
    assert "max_staleness_s" not in result["regressions"] and not result["regressions"]
    assert {"pool_timeouts", "db_loads_per_expiry", "error_rate"} <= set(result["improvements"])
    assert judge("max_staleness_s", 8.4, 30.0) == "worse"  # beyond noise it is one
    assert judge("p50_ms", 2.0, 10.0) == "worse" and judge("p99_ms", 100.0, 110.0) is None
    # a tie within noise shares the win; all within noise: no winner
    assert winners([{"p99_ms": 100.0}, {"p99_ms": 105.0}, {"p99_ms": 300.0}])["p99_ms"] == [0, 1]
    assert "p99_ms" not in winners([{"p99_ms": 100.0}, {"p99_ms": 105.0}])


def test_fail_on_regression_uses_the_same_rule(two_runs):
    import sys

    baseline, better = two_runs

    def compare(a, b):
        return subprocess.run([sys.executable, "-m", "cachestorm", "compare", str(a), str(b), "--fail-on-regression"],
                              capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})

    # error rate 2/44 -> 2/45 is within noise: not a regression (the old rule exited 1 on it)
    forward = compare(baseline, better)
    assert forward.returncode == 0, forward.stdout + forward.stderr
    backward = compare(better, baseline)
    assert backward.returncode == 1, backward.stdout + backward.stderr
    assert "db_amplification" in backward.stdout and "error_rate" not in backward.stdout.split("regression(s):")[1]


# ---------------------------------------------------------------- the verdict

def _analysis(strategy="cache-aside", outcome="ok", **headline) -> dict:
    return {"run": {"strategy": strategy, "outcome": outcome},
            "phases": [{"name": "before", "kind": "before", "t_start": 1.0, "t_end": 9.0, "fault": None}],
            "faults": [{"name": "fault hot-key-expiry-repeated", "t_start": 9.0, "t_end": 15.0, "outcome": "applied",
                        "details": {"fault": "hot-key-expiry-repeated", "keys": 10, "settings": {"every_ms": 1500}}}],
            "consistency": {"promise": {"held": True}, "staleness_bound_s": 3600.0},
            "headline": {"error_rate": 0.0, "pool_timeouts": 0, "timeouts": 0, "stale_reads_over_bound": 0,
                         **headline}}


def test_verdict_is_red_on_failed_requests_though_the_promise_held():
    from cachestorm.reports.verdict import build_verdict

    analysis = _analysis(error_rate=0.28, errors=420, pool_timeouts=716, timeouts=81, db_loads_per_expiry=1.4,
                         db_load_attempts_per_expiry=15.9,
                         db_ground_truth={"source": "pg", "pg_count": 235, "targets_count": 236, "agrees": True},
                         db_p99_ms_before_fault=700.0, db_p99_ms_during_fault=3600.0,
                         attempts_per_request_during_fault=1.86,
                         recovery={"recovered": True, "time_s": 4.1, "within_s": 8.0, "last_signal": "p99_ms"})
    # Locust counts every attempt (the rate's source); the histories (errors: 420) only the sampled keys
    analysis["errors"] = {"locust_failures_by_kind": {"pool_exhausted": 716, "timeout": 81}}
    verdict = build_verdict(analysis)
    assert verdict["level"] == "red"
    text = verdict["text"]
    assert text.startswith("The 10 hot keys expired at 8 s and again every 1.5 s until 14 s.")  # since load start
    for part in ("Without protection", "15.9 DB load attempts per expiry, 1.4 executed (PostgreSQL confirms)",
                 "DB p99 0.7 → 3.6 s", "the pool ran dry 716 times", "81 client timeouts",
                 "1.86 attempts per request", "797 failed attempts (28 %, Locust's count)", "healthy again 4.1 s after"):
        assert part in text, (part, text)


def test_verdict_levels():
    from cachestorm.reports.verdict import build_verdict

    clean = build_verdict(_analysis("cache-aside+lock", db_loads_per_expiry=1.0, recovered_on_its_own=True,
                                    time_to_recover_s=0.2))
    assert clean["level"] == "green" and "With the lock: 1 DB loads per expiry" in clean["text"], clean
    assert build_verdict(_analysis(pool_timeouts=3))["level"] == "amber"
    assert build_verdict(_analysis(db_loads_per_expiry=5.0))["level"] == "red"
    assert build_verdict(_analysis(recovery={"recovered": False, "within_s": 8.0, "last_signal": "p99_ms"}))[
        "text"].endswith("not recovered within 8 s (last signal: p99_ms).")
    failed = build_verdict(_analysis(outcome="failed"))
    assert failed["level"] == "red" and failed["text"].startswith("This run did not complete")
    sick = build_verdict(_analysis(baseline_healthy=False, baseline={
        "p99_ms": {"value": 4400.0, "limit": 1000.0, "broke": True},
        "error_rate": {"value": 0.34, "limit": 0.01, "broke": True},
        "pool_timeouts": {"value": 0, "limit": 0, "broke": False}}))
    assert sick["level"] == "red" and sick["reasons"][0] == "unhealthy baseline"
    assert sick["text"].startswith("Before any fault the system was already unhealthy: p99 4.4 s (limit 1.0 s), "
                                   "error rate 34 % (limit 1 %);")
    assert "--rate" in sick["text"] and "cachestorm capacity" in sick["text"] and "pool timeouts" not in sick["text"]


def test_reports_open_with_the_verdict(two_runs, tmp_path):
    run_html, summary, _ = render_run(two_runs[0])
    verdict = json.loads((two_runs[0] / "report.json").read_text())["headline"]["verdict"]
    html = run_html.read_text()
    assert html.index('id="verdict"') < html.index("<svg") and verdict["level"] == "red"  # 2 of 45 failed
    assert verdict["text"] in summary.read_text().splitlines()[2]
    cmp_html, cmp_md, _ = render_comparison(list(two_runs), tmp_path / "cmp")
    text = cmp_html.read_text()
    assert text.count('class="verdict ') == 2 and text.index('class="verdict ') < text.index('table class="incident"')
    assert cmp_md.read_text().splitlines()[2].startswith("🔴 **RED** **cache-aside**")


def test_a_bound_far_above_the_data_is_written_not_drawn():
    from cachestorm.reports.html import run_charts

    def staleness(bound: float):
        analysis = {"phases": [{"name": "before", "kind": "before", "t_start": 2.0, "t_end": 20.0, "fault": None}],
                    "consistency": {"staleness_bound_s": bound, "findings": {"stale_reads": {"series": [
                        {"t": 3.0, "max_staleness_s": 4.0}, {"t": 10.0, "max_staleness_s": 9.6}]}}}}
        return next(c for c in run_charts(analysis) if c.chart_id == "staleness")

    far = staleness(3600.0)
    assert [line.name for line in far.lines] == ["worst staleness"] and "3,600 s" in far.note
    near = staleness(20.0)
    assert [line.name for line in near.lines] == ["worst staleness", "declared bound"] and not near.note
    assert far.lines[0].points[0][0] == 1.5  # seconds since load start (2 s), at the second's centre
