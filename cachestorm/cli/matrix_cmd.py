"""`cachestorm matrix`: every strategy under every experiment, then one comparative report."""

from __future__ import annotations

import dataclasses

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cachestorm.cli import options
from cachestorm.conductor import (
    RunSettings,
    parse_duration,
    plan_experiment,
    validate_strategy,
)
from cachestorm.core.defaults import DEFAULTS
from cachestorm.core.errors import CachestormError
from cachestorm.core.runfolder import RunFolder
from cachestorm.matrix import run_matrix
from cachestorm.summary import print_unhealthy_baselines

console = Console()


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@options.with_knobs
def matrix(
    ctx: typer.Context,
    strategies: str = typer.Option(..., "--strategies", help="Comma-separated, e.g. cache-aside,cache-aside+coalescing"),
    experiments: str = typer.Option(DEFAULTS.matrix_experiments, "--experiments", help="Comma-separated names or files; 'none' for no fault."),
    duration: str = typer.Option(options.seconds(DEFAULTS.duration_s), "--duration", help="Load per combination."),
    users: int = typer.Option(DEFAULTS.matrix_users, "--users", help="Locust users."),
    domain: str = options.DOMAIN,
    recompute: str = options.recompute_option(DEFAULTS.matrix_recompute_ms),
    celebrity_share: float = options.celebrity_share_option(DEFAULTS.matrix_celebrity_share),
    rate: float = options.RATE,
    retry: str = options.RETRY,
    out: str = options.OUT,
) -> None:
    """Run every strategy x experiment combination with the same traffic, one shared stack."""
    base = RunSettings(domain=domain, duration_s=parse_duration(duration, "--duration"), users=users, spawn_rate=users,
                       recompute_ms=parse_duration(recompute, "--recompute") * 1000,
                       celebrity_share=celebrity_share, rate=rate, retry=retry, explicit=options.typed_settings(ctx),
                       **options.knob_settings_of(ctx))
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
    print_unhealthy_baselines(result.run_dirs, console)
    failed = [(run_dir.name, why) for run_dir in result.run_dirs if (why := RunFolder(run_dir).incomplete())]
    if failed:  # e.g. a fault that failed to apply: reported, but the matrix did not test what it says
        raise CachestormError(f"{len(failed)} of {len(result.run_dirs)} runs are marked failed; first: "
                              f"{failed[0][0]} ({failed[0][1]})", exit_code=1)
