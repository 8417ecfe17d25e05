"""`cachestorm demo`: the hot-key incident, measured, side by side, in about three minutes."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from cachestorm.cli import options
from cachestorm.conductor import RunSettings, parse_duration
from cachestorm.core.defaults import DEFAULTS
from cachestorm.matrix import run_matrix
from cachestorm.reports.headline import recovery_text

console = Console()

# unprotected (with the experiment's naive retries), then the three ways out of a stampede
DEMO_STRATEGIES = ["cache-aside", "cache-aside+coalescing", "cache-aside+lock", "stale-while-revalidate"]
# what the side-by-side table shows, from each run's headline
COLUMNS = [("baseline healthy", "baseline_healthy"), ("DB loads/expiry (ran)", "db_loads_per_expiry"),
           ("DB load attempts/expiry", "db_load_attempts_per_expiry"), ("DB p99 before ms", "db_p99_ms_before_fault"),
           ("DB p99 during ms", "db_p99_ms_during_fault"), ("pool timeouts", "pool_timeouts"),
           ("client timeouts", "timeouts"), ("attempts/req in window", "attempts_per_request_during_fault"),
           ("p99 during ms", "p99_ms_during_fault"), ("recovered", "recovered_on_its_own")]


def demo(
    ctx: typer.Context,
    duration: str = typer.Option(options.seconds(DEFAULTS.demo_duration_s), "--duration",
                                 help=f"Load per strategy (the hot keys expire for 6 s from {DEFAULTS.demo_experiment_at_s:g} s in)."),
    out: str = typer.Option(DEFAULTS.out, "--out", help="Folder for the demo's run folders."),
    strategies: str = typer.Option(",".join(DEMO_STRATEGIES), "--strategies", help="Comma-separated strategies."),
) -> None:
    """Same traffic, same hot-key expiry, on the experiment's defaults (a saturating DB, client
    timeouts, naive retries): unprotected, coalescing, lock, stale-while-revalidate."""
    # everything else comes from hot-key-expiry's `run:` section, as `cachestorm run` would take it.
    # The expiry 8 s into the load: Locust needs a few seconds to start sending, and the report needs
    # a steady "before". Per-run reports are skipped (the comparison is rendered): ~3 minutes on 2 cores.
    base = RunSettings(duration_s=parse_duration(duration, "--duration"), experiment_at_s=DEFAULTS.demo_experiment_at_s,
                       render=False,
                       # the demo's length counts as typed: hot-key-expiry's `run:` does not override it
                       explicit=options.typed_settings(ctx, "duration_s"))
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    with console.status("demo") as status:
        result = run_matrix(base, names, ["hot-key-expiry"], out, name="demo",
                            on_progress=lambda what, i, n: status.update(f"demo {i + 1}/{n}: {what}"))
    _print(result)


def _print(result) -> None:
    from cachestorm.reports.analysis import analyze_run

    names = [run_dir.name.split("-", 2)[-1].removesuffix("-hot-key-expiry").replace("cache-aside+", "+")
             .replace("stale-while-revalidate", "SWR") for run_dir in result.run_dirs]  # fits 80 columns
    analyses = [analyze_run(run_dir) for run_dir in result.run_dirs]
    headlines = [analysis["headline"] for analysis in analyses]
    table = Table(title="hot-key-expiry, side by side")
    table.add_column("measure")
    for name in names:
        table.add_column(name, justify="right")
    for title, key in COLUMNS:
        if key == "recovered_on_its_own":  # the run's one recovery, as every report words it
            table.add_row(title, *(recovery_text(numbers.get("recovery"), key) for numbers in headlines))
            continue
        table.add_row(title, *(_cell(numbers.get(key)) for numbers in headlines))
    console.print(table)
    truth = [(run_dir.name, a["db"]["ground_truth"]) for run_dir, a in zip(result.run_dirs, analyses, strict=True)]
    for name, check in truth:
        if check and not check["agree"]:
            console.print(f"[yellow]PostgreSQL disagrees[/] {name}: {check['note']}")
    for name, sentence in _unhealthy(analyses, result.run_dirs):
        console.print(f"[bold red]unhealthy baseline[/] {name}: {sentence}")
    for run_dir in result.run_dirs:
        console.print(f"[dim]run folder: {run_dir}[/]")
    for path in result.report_paths:
        console.print(f"[bold]report:[/] {path}")


def _unhealthy(analyses: list[dict], run_dirs: list) -> list[tuple[str, str]]:
    return [(run_dir.name, (a.get("baseline") or {}).get("sentence") or "unhealthy baseline")
            for run_dir, a in zip(run_dirs, analyses, strict=True) if (a.get("baseline") or {}).get("healthy") is False]


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:,.2f}" if isinstance(value, float) else str(value)
