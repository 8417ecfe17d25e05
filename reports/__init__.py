"""Reports: analysis of a run folder, the consistency checker, renderers and the SLO gate.

Public API (what the CLI calls):
    analyze_run(run_dir) -> dict                       # report.json schema: docs/report-schema.md
    check_run(run_dir) -> dict                         # consistency findings only
    render_run(run_dir) -> list[Path]                  # report.html, summary.md, report.json
    render_comparison(run_dirs, out_dir) -> list[Path] # comparison.html, .md, .json
    compare_runs(baseline, candidate) -> dict          # deltas, regressions
    evaluate_gate(config_path, run_dirs) -> GateResult # .passed, .exit_code, .results
    write_junit(gate_result, path) -> Path
"""

from cachestorm.reports.analysis import analyze_run
from cachestorm.reports.checker import check_run
from cachestorm.reports.compare import compare_runs
from cachestorm.reports.gate import GateResult, evaluate_gate
from cachestorm.reports.junit import write_junit
from cachestorm.reports.markdown import render_gate_markdown
from cachestorm.reports.render import render_comparison, render_run

__all__ = ["GateResult", "analyze_run", "check_run", "compare_runs", "evaluate_gate", "render_comparison",
           "render_gate_markdown", "render_run", "write_junit"]
