"""`cachestorm report RUN...` and `cachestorm compare A B`: render and compare run folders."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cachestorm.core.errors import CachestormError
from cachestorm.core.runfolder import RunFolder

console = Console()


def check_run_dirs(paths: list[Path]) -> list[Path]:
    for path in paths:
        if not RunFolder(path).is_run():
            raise CachestormError(f"{path} is not a run folder (no {RunFolder.META}); pass folders made by cachestorm run")
    return paths


def report(
    runs: list[Path] = typer.Argument(..., help="Run folders."),
    out: Path = typer.Option(None, "--out", help="Where a comparison of several runs goes."),
) -> None:
    """Render report.html, summary.md and report.json for each run (and a comparison of several).
    Exit 1 if a run did not complete (it is still rendered, marked as such)."""
    from cachestorm.core.paths import check_output_folder
    from cachestorm.reports import render_comparison, render_run

    if out is not None:  # before the reports are rendered: a bad --out used to fail after them
        check_output_folder(out, "--out")
    incomplete = False
    for run_dir in check_run_dirs(runs):
        incomplete |= _warn_if_incomplete(run_dir)
        for path in render_run(run_dir):
            console.print(f"wrote {path}")
    if len(runs) > 1:
        out = out or runs[0].parent / f"comparison-{time.strftime('%Y%m%d-%H%M%S')}"
        for path in render_comparison(runs, out):
            console.print(f"wrote {path}")
    if incomplete:
        raise typer.Exit(1)  # rendered, but a run did not complete: not a result to trust as it is


def compare(
    baseline: Path = typer.Argument(..., help="The run to compare against."),
    candidate: Path = typer.Argument(..., help="The new run."),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="Exit 1 if anything regressed."),
) -> None:
    """Deltas between two runs; regressions in red."""
    from cachestorm.reports import compare_runs

    result = compare_runs(*check_run_dirs([baseline, candidate]))
    table = Table(title=f"{result['candidate']} vs {result['baseline']}",
                  caption="better / regression: only beyond noise (per metric, both a relative and an absolute "
                          "threshold: docs/report-schema.md, \"Comparison\")")
    for column in ("metric", "baseline", "candidate", "delta", "verdict"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in result["metrics"]:
        verdict = "[red]regression[/]" if row["regression"] else ("[green]better[/]" if row["improvement"] else
                                                                 "" if row.get("judged", True) else "[dim]not judged[/]")
        delta = "" if row["delta"] is None else f"{row['delta']:+.4g}" + (
            f" ({row['relative']:+.0%})" if row["relative"] is not None else "")
        style = "red" if row["regression"] else None
        table.add_row(row["label"], _show(row["baseline"]), _show(row["candidate"]), delta, verdict, style=style)
    console.print(table)
    from cachestorm.summary import print_unhealthy_baselines

    print_unhealthy_baselines([baseline, candidate], console)
    if result["regressions"]:
        console.print(f"[red]{len(result['regressions'])} regression(s):[/] {', '.join(result['regressions'])}")
        if fail_on_regression:
            raise typer.Exit(1)


def _warn_if_incomplete(run_dir: Path) -> bool:
    """A run that failed or was interrupted still renders, but nobody should mistake it for a clean one."""
    why = RunFolder(run_dir).incomplete()
    if why:
        console.print(f"[yellow]warning:[/] {run_dir} did not complete ({why}): its numbers cover only what "
                      "was recorded; exit code 1")
    return why is not None


def _show(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
