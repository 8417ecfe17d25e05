"""`cachestorm gate`: SLOs from a config file over run folders; exit 0 pass, 1 SLO failure, 2 usage error."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from cachestorm.cli.report_cmd import check_run_dirs
from cachestorm.core.errors import CachestormError
from cachestorm.core.paths import check_input_path, check_output_file
from cachestorm.core.runfolder import RunFolder

console = Console()


def gate(
    runs: list[Path] = typer.Argument(..., help="Run folders (a matrix folder's runs, or single runs)."),
    config: Path = typer.Option(..., "--config", "-c", help="YAML file with a `slos:` list."),
    junit: Path = typer.Option(None, "--junit", help="Write JUnit XML here (one test case per SLO)."),
    markdown: Path = typer.Option(None, "--markdown", help="Write the Markdown verdict here."),
) -> None:
    """Evaluate SLOs per strategy and experiment; say which failed and by how much."""
    from cachestorm.reports import evaluate_gate, render_gate_markdown, write_junit

    # every path checked before the verdict is computed: a bad output path used to fail after it
    check_input_path(config, "--config")
    for run in runs:
        check_input_path(run, "RUNS")
    for path, flag in ((junit, "--junit"), (markdown, "--markdown")):
        if path is not None:
            check_output_file(path, flag)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        check_output_file(summary, "$GITHUB_STEP_SUMMARY")
    result = evaluate_gate(config, check_run_dirs(expand_runs(runs)), known=known_names())
    for item in result.results:
        mark = "[yellow]skip[/]" if item.skipped else ("[green]pass[/]" if item.passed else "[red]FAIL[/]")
        console.print(f"{mark}  {escape(item.name)} \\[{escape(item.run or '-')}]: {escape(item.message)}")
    text = render_gate_markdown(result)
    try:
        if junit:
            write_junit(result, junit)
        if markdown:
            markdown.write_text(text)
        if summary:
            with open(summary, "a") as handle:
                handle.write(text + "\n")
    except OSError as exc:  # checked above; the file system changed since (full, removed)
        raise CachestormError(f"cannot write {exc.filename}: {exc.strerror}") from None
    verdict = "passed" if result.passed else f"failed: {len(result.failures)} of {len(result.results)} SLO checks"
    console.print(f"gate {verdict}")
    raise typer.Exit(result.exit_code)


def known_names() -> dict:
    """The gate's checks of `where: {strategy, experiment}` values (the reports know neither)."""
    from cachestorm.chaos.experiment import ready_experiments
    from cachestorm.targets.strategies import parse_spec

    def strategy(value: str) -> str | None:
        try:
            parse_spec(value)
        except CachestormError as exc:
            return str(exc).split(";")[0]
        return None

    def experiment(value: str) -> str | None:
        ready = ready_experiments()
        return None if value in ready else f"no such experiment; ready ones: {', '.join(ready)}"

    return {"strategy": strategy, "experiment": experiment}


def expand_runs(paths: list[Path]) -> list[Path]:
    """A folder holding run folders (a matrix or demo) stands for all of them."""
    expanded: list[Path] = []
    for path in paths:
        if RunFolder(path).is_run() or not path.is_dir():
            expanded.append(path)
        else:
            children = sorted(p for p in path.iterdir() if RunFolder(p).is_run())
            expanded.extend(children or [path])
    return expanded
