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
    assert html.count('class="winner"') >= 4
    deltas = json.loads(json_path.read_text())["deltas"][0]
    # counts and the window's p99 are shown, but rates and the worst second decide
    assert {"p99_ms_fault_worst_second", "db_amplification", "stale_reads_per_1k"} <= set(deltas["improvements"])
    assert deltas["regressions"] == ["error_rate"]  # one op fewer in the synthetic run: 2/44 vs 2/45
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
