"""A terminal summary of one run folder, read from its records (never from live state)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cachestorm.core.runfolder import RunFolder


def baseline_warning(run_dir: str | Path) -> str | None:
    """The plain-words verdict of an unhealthy baseline (report.json `baseline.sentence`), else None."""
    report = RunFolder(run_dir).report_json_path
    if not report.exists():
        return None
    return ((json.loads(report.read_text()).get("baseline") or {}).get("sentence")) or None


def unhealthy_baselines(run_dirs: list) -> list[tuple[str, str]]:
    """(run folder name, plain-words verdict) of each run whose baseline was unhealthy: from report.json,
    else analysed from the run folder."""
    found = []
    for run_dir in run_dirs:
        report = RunFolder(run_dir).report_json_path
        if report.exists():
            baseline = json.loads(report.read_text()).get("baseline") or {}
        else:
            from cachestorm.reports.analysis import analyze_run

            baseline = analyze_run(run_dir).get("baseline") or {}
        if baseline.get("healthy") is False:
            found.append((Path(run_dir).name, baseline.get("sentence") or "unhealthy baseline"))
    return found


def print_unhealthy_baselines(run_dirs: list, console: Console) -> None:
    """compare, matrix and demo mark each run measured on an unhealthy baseline."""
    for name, sentence in unhealthy_baselines(run_dirs):
        console.print(f"[bold red]unhealthy baseline[/] {escape(name)}: {escape(sentence)}")


def verdict(run_dir: str | Path) -> dict | None:
    """report.json's headline.verdict ({level, text, reasons}: reports/verdict.py), else None."""
    report = RunFolder(run_dir).report_json_path
    if not report.exists():
        return None
    found = (json.loads(report.read_text()).get("headline") or {}).get("verdict")
    return found if isinstance(found, dict) and found.get("text") else None


VERDICT_STYLE = {"red": "bold red", "amber": "bold yellow", "green": "bold green"}


def headline(run_dir: str | Path) -> dict:
    """The numbers a person looks at first; from report.json when rendered, else Locust's CSV."""
    folder = RunFolder(run_dir)
    report = folder.report_json_path
    if report.exists():
        from cachestorm.reports.headline import display, shown_metrics

        data = json.loads(report.read_text())
        # as the reports show them: "n/a (why)" or "not measured", never None; other domains' rows left out
        return {name: display(data, name) for name in shown_metrics(data)} | {"source": RunFolder.REPORT_JSON}
    stats = folder.locust_csv_path("stats")
    if stats is None:
        return {}
    with open(stats) as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("Name") == "Aggregated"]
    if not rows:
        return {}
    row = rows[0]
    requests = int(row["Request Count"])
    return {"requests": requests, "failures": int(row["Failure Count"]),
            "p50_ms": float(row["50%"]), "p99_ms": float(row["99%"]),
            "rps": float(row["Requests/s"]), "source": "locust stats (closed model)"}


def print_summary(run_dir: str | Path, console: Console | None = None) -> None:
    console = console or Console()
    warning = baseline_warning(run_dir)
    if warning:  # before any figure: the fault's figures of an overloaded run mean little
        console.print(f"[bold red]{escape(warning)}[/]")
    numbers = headline(run_dir)
    table = Table(title=f"run {Path(run_dir).name}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in numbers.items():
        if key == "source":
            continue
        table.add_row(key, f"{value:,.2f}" if isinstance(value, float) else str(value))
    console.print(table)
    if numbers.get("source"):
        console.print(f"[dim]from {numbers['source']}; run folder: {run_dir}[/]")
    said = verdict(run_dir)
    if said:  # what happened, in plain words, where the eye lands after the table
        style = VERDICT_STYLE.get(said.get("level"), "bold")
        console.print(f"[{style}]{escape(str(said.get('level')))}:[/] {escape(said['text'])}")
