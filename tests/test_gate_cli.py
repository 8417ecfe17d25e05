"""`cachestorm gate` as CI runs it (a subprocess over synthetic run folders), the example SLOs and workflow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import yaml
from cachestorm.reports.gate import load_slos
from cachestorm.reports.synthetic import write_synthetic_run

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cachestorm", "gate"]

GOOD = """
slos:
  - name: p99 during the expiry
    metric: p99_ms_during_fault
    max: 250
  - name: error rate
    metric: error_rate
    max: 0.1
  - name: DB amplification (coalescing)
    metric: db_amplification
    max: 5
    where: {strategy: cache-aside+coalescing}
  - name: zero lost writes
    metric: lost_writes
    max: 0
"""

TIGHT = """
slos:
  - name: p99 during the expiry
    metric: p99_ms_during_fault
    max: 50
  - name: zero lost writes
    metric: lost_writes
    max: 0
"""


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> Path:
    """A matrix folder like `cachestorm matrix` writes: cache-aside (p99 100 ms during the fault, 21.5x DB)
    and cache-aside+coalescing (p99 10 ms, 3.5x DB)."""
    folder = tmp_path_factory.mktemp("gate-cli") / "matrix-20250101-000000"
    write_synthetic_run(folder / "cache-aside-hot-key-expiry")
    write_synthetic_run(folder / "coalescing-hot-key-expiry", strategy="cache-aside+coalescing", fault_ms=10.0,
                        fault_db_per_s=30.0, stale_reads=0)
    return folder


def gate(tmp_path: Path, config: str | Path, *runs: Path, env_extra: dict | None = None):
    config_path = Path(config) if isinstance(config, Path) else tmp_path / "gate.yaml"
    if not isinstance(config, Path):
        config_path.write_text(config)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "COLUMNS": "200", **(env_extra or {})}
    return subprocess.run(CLI + [str(r) for r in runs] + ["--config", str(config_path), "--junit",
                                                          str(tmp_path / "junit.xml"), "--markdown",
                                                          str(tmp_path / "gate.md")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def junit_cases(path: Path) -> list[ET.Element]:
    return list(ET.parse(path).getroot().iter("testcase"))


def test_good_config_passes_with_exit_0_and_writes_ci_files(tmp_path, matrix):
    summary = tmp_path / "step-summary.md"
    result = gate(tmp_path, GOOD, matrix, env_extra={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gate passed" in result.stdout
    cases = junit_cases(tmp_path / "junit.xml")
    # 3 SLOs over both runs + the coalescing-only one over one run
    assert len(cases) == 7 and not [c for c in cases if c.find("failure") is not None]
    assert "SLO gate: passed" in (tmp_path / "gate.md").read_text()
    assert "SLO gate: passed" in summary.read_text()  # appended to the GitHub job summary


def test_tight_config_fails_with_exit_1_naming_the_slo_and_the_excess(tmp_path, matrix):
    result = gate(tmp_path, TIGHT, matrix)
    assert result.returncode == 1, result.stdout + result.stderr
    # cache-aside: p99 100.031 ms during the fault is 50.031 over the max 50; coalescing's 10 ms passes
    failing = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1
    assert "p99 during the expiry" in failing[0] and "over the max 50 by 50.03" in failing[0]
    assert "failed: 1 of 4 SLO checks" in result.stdout
    cases = junit_cases(tmp_path / "junit.xml")
    assert len(cases) == 4  # one test case per SLO and run
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == 1 and failed[0].get("classname") == "profiles-cache-aside-hot-key-expiry"
    assert "by 50.03" in failed[0].find("failure").get("message")
    assert "❌" in (tmp_path / "gate.md").read_text()


@pytest.mark.parametrize(("config", "field"), [
    ("slos:\n  - metric: p99_ms\n    max: fast\n", "slos[0].max"),
    ("slos:\n  - metric: p99_milliseconds\n    max: 5\n", "slos[0].metric"),
    ("slos:\n  - metric: p99_ms\n    max: 5\n    where: {colour: red}\n", "slos[0].where"),
    ("slos: []\n", "`slos`"),
    ("slos:\n  - metric: p99_ms\n    max: 5\n    where: {strategy: cache-asid}\n", "slos[0].where.strategy"),
    ("slos:\n  - metric: p99_ms\n    max: 5\n    where: {domain: weather}\n", "slos[0].where.domain"),
    ("slos:\n  - metric: p99_ms\n    max: 5\n    where: {experiment: [hot-key-expiry, hot-key-expry]}\n",
     "slos[0].where.experiment"),
    ("slos:\n  - metric: p99_ms\n    min: 10\n    max: 5\n", "min 10 is above max 5"),
    # issue 21: NaN passed every value (each comparison is false); a second `max:` replaced the first
    ("slos:\n  - metric: p99_ms\n    max: .nan\n", "slos[0].max: nan is not a finite number"),
    ("slos:\n  - metric: p99_ms\n    max: .inf\n", "slos[0].max: inf is not a finite number"),
    ("slos:\n  - metric: p99_ms\n    min: -.inf\n", "slos[0].min: -inf is not a finite number"),
    ("slos:\n  - metric: p99_ms\n    max: 5\n    max: 500\n", "duplicate key 'max' at line 4 (first at line 3)"),
])
def test_malformed_config_exits_2_with_one_line_naming_file_and_field(tmp_path, matrix, config, field):
    result = gate(tmp_path, config, matrix)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert "gate.yaml" in lines[0] and field in lines[0]
    assert not (tmp_path / "junit.xml").exists()


def test_path_that_is_not_a_run_folder_exits_2(tmp_path, matrix):
    stray = tmp_path / "not-a-run"
    stray.mkdir()
    (stray / "notes.txt").write_text("hello")
    for path in (stray, tmp_path / "missing"):
        result = gate(tmp_path, GOOD, path)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and path.name in lines[0]
        assert "not a run folder" in lines[0]


def test_example_gate_config_is_valid_and_covers_both_strategies(tmp_path, matrix):
    slos = load_slos(REPO / "examples" / "gate.yaml")
    metrics = {slo.metric for slo in slos}
    assert {"p99_ms_during_fault", "error_rate", "db_amplification", "lost_writes"} <= metrics
    assert metrics & {"max_staleness_s", "stale_reads_over_bound"}
    result = gate(tmp_path, REPO / "examples" / "gate.yaml", matrix)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    cases = junit_cases(tmp_path / "junit.xml")
    # every SLO's `where` matches at least one of the matrix's runs: nothing is skipped
    assert not [c for c in cases if c.find("skipped") is not None]
    assert {c.get("classname") for c in cases} == {"profiles-cache-aside-hot-key-expiry",
                                                   "profiles-cache-aside+coalescing-hot-key-expiry"}


def test_workflow_runs_the_matrix_then_the_gate_with_junit():
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "cachestorm-gate.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers
    steps = workflow["jobs"]["gate"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    runs = [" ".join(str(s.get("run", "")).split()) for s in steps]
    assert any(u.startswith("actions/checkout@") for u in uses)
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert str(setup["with"]["python-version"]) == "3.11"
    assert "pip install -e ." in runs
    matrix_index = next(i for i, r in enumerate(runs) if r.startswith("cachestorm matrix"))
    gate_index = next(i for i, r in enumerate(runs) if r.startswith("cachestorm gate"))
    assert matrix_index < gate_index
    assert "--strategies cache-aside,cache-aside+coalescing" in runs[matrix_index]
    assert "--out runs" in runs[matrix_index]
    command = runs[gate_index]
    assert "runs/matrix-*" in command and "--config examples/gate.yaml" in command
    assert "--junit junit.xml" in command and "--markdown gate.md" in command
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and "junit.xml" in upload["with"]["path"]
    assert "comparison" in upload["with"]["path"]
    junit_step = next(s for s in steps if "junit" in s.get("uses", "").lower())
    assert junit_step["with"]["report_paths"] == "junit.xml"


def _mark_failed(run_dir: Path, step: str = "start targets", error: str = "CachestormError: target exited") -> None:
    """What the conductor leaves when a step fails before or during the load."""
    run = json.loads((run_dir / "run.json").read_text())
    run["outcome"] = "failed"
    (run_dir / "run.json").write_text(json.dumps(run))
    with open(run_dir / "journal.jsonl", "a") as journal:
        journal.write(json.dumps({"what": step, "kind": "target", "t_start": 0.0, "t_end": 0.1,
                                  "outcome": "failed", "details": {"error": error}}) + "\n")


def test_a_run_that_did_not_complete_fails_the_gate_whatever_its_numbers(tmp_path):
    run_dir = tmp_path / "runs" / "failed-run"
    write_synthetic_run(run_dir)
    _mark_failed(run_dir)
    result = gate(tmp_path, GOOD, run_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the run did not complete (failed: start targets: CachestormError: target exited)" in result.stdout
    failed = [c.get("name") for c in junit_cases(tmp_path / "junit.xml") if c.find("failure") is not None]
    assert failed[0] == "run completed"
    assert all("(coalescing)" in name for name in failed[1:])  # matched no run: failed, not skipped


def test_an_slo_that_matched_no_run_fails_the_gate(tmp_path, matrix):
    config = "slos:\n  - {name: partition, metric: lost_writes, max: 0, where: {experiment: redis-partition}}\n"
    result = gate(tmp_path, config, matrix)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "nothing was checked" in result.stdout and "gate failed" in result.stdout


def test_report_of_a_run_that_did_not_complete_is_marked_and_exits_1(tmp_path):
    run_dir = tmp_path / "runs" / "failed-run"
    write_synthetic_run(run_dir)

    def report():
        return subprocess.run([sys.executable, "-m", "cachestorm", "report", str(run_dir)], cwd=tmp_path,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "COLUMNS": "200"},
                              capture_output=True, text=True, timeout=60)

    clean = report()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "did not complete" not in (run_dir / "report.html").read_text()
    _mark_failed(run_dir)
    result = report()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "did not complete (failed: start targets" in result.stdout and "Traceback" not in result.stderr
    for name in ("report.html", "summary.md"):
        text = (run_dir / name).read_text()
        assert "This run did not complete" in text and "start targets" in text, name
    assert json.loads((run_dir / "report.json").read_text())["run"]["outcome"] == "failed"


@pytest.mark.parametrize("where", ["a-file", "a-file/below"])
def test_report_comparison_out_that_cannot_be_a_folder_is_one_line(tmp_path, matrix, where):
    (tmp_path / "a-file").write_text("keep me\n")
    runs = sorted(p for p in matrix.iterdir() if (p / "run.json").exists())
    result = subprocess.run([sys.executable, "-m", "cachestorm", "report", *map(str, runs), "--out",
                             str(tmp_path / where)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "COLUMNS": "200"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: --out {tmp_path / where}") and (tmp_path / "a-file").read_text() == "keep me\n"


@pytest.mark.parametrize("flag, where", [("--junit", "a folder"), ("--junit", "/proc/junit.xml"),
                                         ("--markdown", "/nonexistent/dir/g.md"), ("--junit", "x" * 300)])
def test_an_output_path_it_cannot_write_is_refused_before_the_verdict(tmp_path, matrix, flag, where):
    """`--junit <a folder>` was an IsADirectoryError traceback after the verdict was printed."""
    config = tmp_path / "gate.yaml"
    config.write_text(GOOD)
    path = str(tmp_path) if where == "a folder" else where
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    result = subprocess.run(CLI + [str(matrix), "--config", str(config), flag, path], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith(f"error: {flag} ") and "Traceback" not in result.stderr
    assert "gate" not in result.stdout and "pass" not in result.stdout  # refused before any verdict
MISSING = """
slos:
  - name: p99 during the expiry
    metric: p99_ms_during_fault
    max: 250
  - name: loads per expiry
    metric: db_loads_per_expiry
    max: 2
  - name: error rate
    metric: error_rate
    max: 0.1
"""


@pytest.mark.parametrize("damage, failing, why", [
    ("delete journal", {"p99 during the expiry", "loads per expiry"}, "journal.jsonl is missing or empty"),
    ("empty journal", {"p99 during the expiry", "loads per expiry"}, "journal.jsonl is missing or empty"),
    ("no fault record", {"p99 during the expiry", "loads per expiry"},
     "the run's experiment hot-key-expiry left no fault record in journal.jsonl"),
    ("delete metrics", {"loads per expiry"}, "metrics.jsonl is missing or holds no scrape of the targets"),
])
def test_missing_data_fails_the_slo_never_skips_it(tmp_path, damage, failing, why):
    run_dir = tmp_path / "runs" / "damaged"
    write_synthetic_run(run_dir, fault_db_per_s=12.0)  # ~1.2 loads per expiry: passes max 2 with its data
    intact = gate(tmp_path, MISSING, run_dir)
    assert intact.returncode == 0, intact.stdout
    journal, metrics = run_dir / "journal.jsonl", run_dir / "metrics.jsonl"
    if damage == "delete journal":
        journal.unlink()
    elif damage == "empty journal":
        journal.write_text("")
    elif damage == "no fault record":
        journal.write_text("".join(line + "\n" for line in journal.read_text().splitlines()
                                   if json.loads(line)["kind"] != "fault"))
    else:
        metrics.unlink()
    for report in ("report.json",):  # a stale report must not answer for the damaged files
        (run_dir / report).unlink(missing_ok=True)
    result = gate(tmp_path, MISSING, run_dir)
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert not any(line.startswith("skip") for line in lines), result.stdout
    failed = {c.get("name").split(" [")[0] for c in junit_cases(tmp_path / "junit.xml") if c.find("failure") is not None}
    assert failed == failing, result.stdout
    assert f"no data ({why})" in result.stdout
    if damage == "delete metrics":  # without scrapes the figure is not measured, never 0 loads
        from cachestorm.reports.analysis import analyze_run

        assert analyze_run(run_dir)["headline"]["db_loads_per_expiry"] is None
