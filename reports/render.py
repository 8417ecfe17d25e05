"""Write a run's (or a comparison's) report files: HTML, Markdown and JSON."""

from __future__ import annotations

from pathlib import Path

from cachestorm.reports.analysis import analyze_run
from cachestorm.reports.html import render_capacity_html, render_comparison_html, render_run_html
from cachestorm.reports.jsonout import write_json
from cachestorm.reports.markdown import (
    render_capacity_markdown,
    render_comparison_markdown,
    render_run_markdown,
)

from cachestorm.core.runfiles import read_json
from cachestorm.core.runfolder import RunFolder, make_folder


def render_run(run_dir: str | Path) -> list[Path]:
    """Analyse a run folder and write report.html, summary.md and report.json into it."""
    run_dir = Path(run_dir)
    analysis = analyze_run(run_dir)
    return write_run_reports(analysis, run_dir)


def write_run_reports(analysis: dict, run_dir: str | Path) -> list[Path]:
    folder = RunFolder(run_dir)
    html = folder.report_html_path
    capacity = read_json(folder.capacity_path) or None  # written by `cachestorm capacity`
    html.write_text(render_run_html(analysis, capacity=capacity), encoding="utf-8")
    markdown = folder.summary_md_path
    markdown.write_text(render_run_markdown(analysis, capacity=capacity), encoding="utf-8")
    return [html, markdown, write_json(analysis, folder.report_json_path)]


def render_comparison(run_dirs: list, out_dir: str | Path) -> list[Path]:
    """Analyse several runs and write comparison.html, comparison.md and comparison.json into out_dir."""
    from cachestorm.reports.compare import as_analysis, compare_runs

    analyses = [as_analysis(run) for run in run_dirs]
    summary = {"runs": [a.get("run") for a in analyses], "headlines": [a.get("headline") for a in analyses],
               "deltas": [compare_runs(analyses[0], a) for a in analyses[1:]]}
    return _write_html_md_json(out_dir, "comparison", render_comparison_html(analyses),
                               render_comparison_markdown(analyses), summary)


def render_capacity_comparison(capacities: list[dict], out_dir: str | Path) -> list[Path]:
    """Several strategies' capacity.json side by side: capacity.html, capacity.md, capacity.json in out_dir."""
    return _write_html_md_json(out_dir, "capacity", render_capacity_html(capacities),
                               render_capacity_markdown(capacities), {"capacities": capacities})


def _write_html_md_json(out_dir: str | Path, stem: str, html_text: str, markdown_text: str, summary: dict) -> list[Path]:
    """<stem>.html, <stem>.md and <stem>.json in out_dir (made if missing); their paths in that order."""
    out_dir = Path(out_dir)
    make_folder(out_dir)
    html = out_dir / f"{stem}.html"
    html.write_text(html_text, encoding="utf-8")
    markdown = out_dir / f"{stem}.md"
    markdown.write_text(markdown_text, encoding="utf-8")
    return [html, markdown, write_json(summary, out_dir / f"{stem}.json")]
