"""The reports as a person sees them: real headless Chromium at 1,400 px on rendered reports.

Chromium loads each page with a measuring script appended (it writes what it measured into the DOM,
read back with --dump-dom), then takes a screenshot of the whole page. Checked: no horizontal
overflow (also with every collapsed section opened), the verdict first, every chart's fault bands at
the same x and named, no legend over a plot or a plotted line, and the comparison's incident measures
on screen. Screenshots are kept in test-artifacts/browser/ (ignored by git; CACHESTORM_TEST_ARTIFACTS
moves it) to be looked at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cachestorm.reports import render_comparison, render_run
from cachestorm.reports.synthetic import write_synthetic_run

CHROMIUM = "/usr/bin/chromium"
WIDTH = 1400
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("CACHESTORM_TEST_ARTIFACTS") or REPO / "test-artifacts") / "browser"

# appended to a copy of the page: measures the layout (in CSS px) into <pre id="layout-measure">
MEASURE = """
<script>
(function(){
  function box(e){var b=e.getBoundingClientRect();return [b.left,b.top,b.right,b.bottom];}
  function measure(){
    var de=document.documentElement;
    var out={innerWidth:window.innerWidth,scrollWidth:Math.max(de.scrollWidth,document.body.scrollWidth),
             height:Math.max(de.scrollHeight,document.body.scrollHeight)};
    var verdict=document.getElementById('verdict');
    out.verdict=verdict?verdict.textContent.trim():'';
    out.verdictTop=verdict?verdict.getBoundingClientRect().top:null;
    out.levels=Array.prototype.map.call(document.querySelectorAll('#verdict .verdict'),
      function(e){return e.getAttribute('data-level');});
    out.firstChartTop=null;
    out.charts=Array.prototype.map.call(document.querySelectorAll('svg.chart:not(.empty)'),function(svg){
      var left=svg.getBoundingClientRect().left;
      if(out.firstChartTop===null){out.firstChartTop=svg.getBoundingClientRect().top;}
      var lines=[];
      svg.querySelectorAll('polyline.series').forEach(function(pl){
        var m=pl.getScreenCTM(),pts=[];
        for(var i=0;i<pl.points.numberOfItems;i++){var q=pl.points.getItem(i).matrixTransform(m);pts.push([q.x,q.y]);}
        lines.push(pts);
      });
      return {id:svg.getAttribute('data-chart'),box:box(svg),plot:box(svg.querySelector('rect.plot-area')),
        bands:Array.prototype.map.call(svg.querySelectorAll('rect.fault'),function(r){
          var b=r.getBoundingClientRect();return {name:r.getAttribute('data-fault'),x:b.left-left,width:b.width};}),
        labels:Array.prototype.map.call(svg.querySelectorAll('text.fault-label'),function(t){return t.textContent;}),
        legends:Array.prototype.map.call(svg.querySelectorAll('g.legend-item'),box),lines:lines};
    });
    out.rows={};
    document.querySelectorAll('table.incident:not(.all-figures) tr[data-measure]').forEach(function(tr){
      out.rows[tr.getAttribute('data-measure')]=box(tr);});
    return out;
  }
  var result={closed:measure()};
  document.querySelectorAll('details').forEach(function(d){d.open=true;});
  result.opened={scrollWidth:measure().scrollWidth};
  document.querySelectorAll('details').forEach(function(d){d.open=false;});
  var pre=document.createElement('pre');pre.id='layout-measure';pre.textContent=JSON.stringify(result);
  document.body.appendChild(pre);
})();
</script>
"""


def _require_chromium():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: install the chromium package")
        pytest.skip(f"{CHROMIUM} not installed")


def _chromium(*args: str, height: int = 1000) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="cachestorm-chromium-") as profile:
        completed = subprocess.run(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--window-size={WIDTH},{height}", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed


def look(html_path: Path, name: str) -> dict:
    """Measure the page in Chromium at 1,400 px and keep its full-page screenshot as name.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    probe = ARTIFACTS / f"{name}.measure.html"
    html = html_path.read_text(encoding="utf-8")
    probe.write_text(html.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    dom = _chromium("--dump-dom", probe.resolve().as_uri()).stdout
    match = re.search(r'<pre id="layout-measure">(.*?)</pre>', dom, re.S)
    assert match, dom[-2000:]
    measured = json.loads(match.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                          .replace("&amp;", "&"))
    shutil.copy(html_path, ARTIFACTS / f"{name}.html")
    shot = ARTIFACTS / f"{name}.png"
    _chromium(f"--screenshot={shot}", html_path.resolve().as_uri(), height=min(int(measured["closed"]["height"]) + 20,
                                                                             12_000))
    assert shot.stat().st_size > 10_000
    measured["screenshot"] = shot
    return measured


def _intersects(box: list[float], a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Does the segment a-b cross the rectangle box [left, top, right, bottom]? (Liang-Barsky)"""
    left, top, right, bottom = box
    (x0, y0), (x1, y1) = a, b
    dx, dy = x1 - x0, y1 - y0
    low, high = 0.0, 1.0
    for p, q in ((-dx, x0 - left), (dx, right - x0), (-dy, y0 - top), (dy, bottom - y0)):
        if p == 0:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low > high:
            return False
    return True


def _overlaps(a: list[float], b: list[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def check_page(measured: dict, *, faults: set[str]) -> dict:
    page = measured["closed"]
    assert page["innerWidth"] == WIDTH, page["innerWidth"]
    assert page["scrollWidth"] <= WIDTH, f"horizontal overflow: {page['scrollWidth']} px in a {WIDTH} px window"
    assert measured["opened"]["scrollWidth"] <= WIDTH, (
        f"horizontal overflow with the collapsed sections open: {measured['opened']['scrollWidth']} px")
    assert len(page["verdict"]) > 40 and page["levels"] and set(page["levels"]) <= {"red", "amber", "green"}, page
    assert page["firstChartTop"] is None or page["verdictTop"] < page["firstChartTop"]  # the verdict first
    charts = page["charts"]
    assert charts
    for fault in faults:
        positions = [(c["id"], band["x"], band["width"]) for c in charts for band in c["bands"] if band["name"] == fault]
        assert len(positions) == len(charts), (fault, positions)  # every chart shows the fault's band ...
        xs = [x for _, x, _ in positions]
        widths = [w for _, _, w in positions]
        assert max(xs) - min(xs) <= 1.0 and max(widths) - min(widths) <= 1.0, positions  # ... at the same x
        assert all(fault in c["labels"] for c in charts), [(c["id"], c["labels"]) for c in charts]  # named
    for chart in charts:
        for legend in chart["legends"]:
            assert not _overlaps(legend, chart["plot"]), (chart["id"], legend, chart["plot"])
            for line in chart["lines"]:
                for a, b in zip(line, line[1:], strict=False):
                    assert not _intersects(legend, tuple(a), tuple(b)), (chart["id"], legend, a, b)
    return page


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    unprotected = write_synthetic_run(tmp / "unprotected")
    protected = write_synthetic_run(tmp / "coalescing", strategy="cache-aside+coalescing", fault_db_per_s=30.0,
                                    fault_ms=10.0, stale_reads=0)
    # a third run: its long label wraps the comparison's legends onto a second row
    locked = write_synthetic_run(tmp / "lock", strategy="cache-aside+lock", fault_db_per_s=25.0, fault_ms=12.0,
                                 stale_reads=0)
    return [unprotected, protected, locked]


def test_run_report_at_1400_px(synthetic_runs):
    _require_chromium()
    page = check_page(look(render_run(synthetic_runs[0])[0], "synthetic-run"), faults={"expire hot keys"})
    assert page["levels"] == ["red"]  # 2 of 45 requests failed
    assert "expire hot keys from 10 s to 12 s" in page["verdict"].lower()


def test_comparison_at_1400_px(synthetic_runs, tmp_path):
    _require_chromium()
    html = render_comparison(synthetic_runs, tmp_path / "cmp")[0]
    page = check_page(look(html, "synthetic-comparison"), faults={"expire hot keys"})
    assert len(page["levels"]) == len(synthetic_runs)  # one verdict line per run
    # the incident's measures are on screen, before the charts
    for measure in ("error_rate", "pool_timeouts", "db_loads_per_expiry", "recovery"):
        if measure in page["rows"]:
            left, top, right, _ = page["rows"][measure]
            assert right <= WIDTH and top < page["firstChartTop"], (measure, page["rows"][measure])
    assert {"error_rate", "db_loads_per_expiry", "recovery"} <= set(page["rows"])
    assert max(len({round(legend[1]) for legend in c["legends"]}) for c in page["charts"]) >= 2  # legends wrapped


@pytest.mark.slow
def test_a_real_matrix_at_1400_px(tmp_path):
    """A short real matrix (stack, targets, Locust, the hot-key expiry): its reports and comparison."""
    _require_chromium()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "cachestorm", "matrix", "--strategies", "cache-aside,cache-aside+lock",
         "--experiments", "hot-key-expiry", "--duration", "16s", "--out", str(tmp_path / "runs")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [matrix] = list((tmp_path / "runs").iterdir())
    runs = sorted(p for p in matrix.iterdir() if (p / "run.json").exists())
    fault = "hot-key-expiry-repeated"
    for run_dir in runs:
        page = check_page(look(render_run(run_dir)[0], f"real-{run_dir.name.split('-', 2)[-1]}"), faults={fault})
        assert "hot keys expired" in page["verdict"]
    unprotected = json.loads((runs[0] / "report.json").read_text())["headline"]["verdict"]
    assert unprotected["level"] == "red", unprotected  # the incident on the defaults
    page = check_page(look(matrix / "comparison.html", "real-comparison"), faults={fault})
    assert len(page["levels"]) == 2
