"""`cachestorm matrix`: every strategy under every experiment, then one comparative report."""

from __future__ import annotations

import dataclasses

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cachestorm.conductor import RunSettings, parse_duration, plan_experiment, validate_strategy
from cachestorm.errors import CachestormError
from cachestorm.matrix import run_matrix
from reports.runfolder import run_incomplete

console = Console()


def _explicit(ctx: typer.Context) -> frozenset[str]:
    """Matrix-wide settings the user typed; experiments' recommendations fill in the rest."""
    from typer._click.core import ParameterSource  # Typer vendors click

    fields = {"duration": "duration_s", "users": "users", "domain": "domain"}
    return frozenset(field for name, field in fields.items()
                     if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None))


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def matrix(
    ctx: typer.Context,
    strategies: str = typer.Option(..., "--strategies", help="Comma-separated, e.g. cache-aside,cache-aside+coalescing"),
    experiments: str = typer.Option("hot-key-expiry", "--experiments", help="Comma-separated names or files; 'none' for no fault."),
    duration: str = typer.Option("30s", "--duration", help="Load per combination."),
    users: int = typer.Option(40, "--users", help="Locust users."),
    domain: str = typer.Option("profiles", "--domain"),
    recompute: str = typer.Option("100ms", "--recompute", help="DB cost of one recompute."),
    celebrity_share: float = typer.Option(0.2, "--celebrity-share"),
    out: str = typer.Option("runs", "--out"),
) -> None:
    """Run every strategy x experiment combination with the same traffic, one shared stack."""
    base = RunSettings(domain=domain, duration_s=parse_duration(duration), users=users, spawn_rate=users,
                       recompute_ms=parse_duration(recompute, "--recompute") * 1000,
                       celebrity_share=celebrity_share, explicit=_explicit(ctx))
    names = [None if e.lower() == "none" else e for e in _split(experiments)]
    for strategy in _split(strategies):  # fail in one line before the progress view draws anything
        validate_strategy(strategy)
    for experiment in names:
        plan_experiment(dataclasses.replace(base, experiment=experiment))
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("matrix", total=len(_split(strategies)) * len(names))

        def on_progress(what: str, index: int, total: int) -> None:
            progress.update(task, completed=index, description=what)

        result = run_matrix(base, _split(strategies), names, out, name="matrix", on_progress=on_progress)
    for path in result.report_paths:
        console.print(f"[bold]report:[/] {path}")
    failed = [(run_dir.name, why) for run_dir in result.run_dirs if (why := run_incomplete(run_dir))]
    if failed:  # e.g. a fault that failed to apply: reported, but the matrix did not test what it says
        raise CachestormError(f"{len(failed)} of {len(result.run_dirs)} runs are marked failed; first: "
                              f"{failed[0][0]} ({failed[0][1]})", exit_code=1)
