"""`cachestorm capacity`: step the open-model rate up per strategy; report the highest rate within the SLOs."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from cachestorm.capacity import CapacityPlan, run_capacity
from cachestorm.cli import options
from cachestorm.conductor import RunSettings, parse_duration
from cachestorm.core.defaults import DEFAULTS
from cachestorm.core.runfolder import RunFolder
from cachestorm.stack import StackSettings

# a wide table also when piped (CI logs): the verdict column names every failed SLO
console = Console(width=None if sys.stdout.isatty() else 150)


@options.with_knobs
def capacity(
    ctx: typer.Context,
    strategy: str = typer.Option(..., "--strategy", "-s", help="One or more, comma-separated (one shared stack)."),
    domain: str = options.DOMAIN,
    max_rate: float = typer.Option(DEFAULTS.capacity_max_rate, "--max-rate", help="Arrivals/s of the last step."),
    steps: int = typer.Option(DEFAULTS.capacity_steps, "--steps", help="Steps from max-rate/steps up to max-rate."),
    hold: str = typer.Option(options.seconds(DEFAULTS.capacity_hold_s), "--hold", help="How long each step lasts."),
    slo_p99: str = typer.Option(options.milliseconds(DEFAULTS.capacity_slo_p99_ms), "--slo-p99", help="p99 SLO per step (latency from the intended send time)."),
    max_error_rate: float = typer.Option(DEFAULTS.capacity_max_error_rate, "--max-error-rate", help="Error-rate SLO per step (fraction)."),
    out: str = options.OUT,
    instances: int = options.INSTANCES,
    rows: int = options.ROWS,
    keys: int = options.KEYS,
    key_model: str = options.KEY_MODEL,
    alpha: float = options.ALPHA,
    celebrity_share: float = options.CELEBRITY_SHARE,
    write_ratio: float = options.WRITE_RATIO,
    ttl: str = typer.Option(options.seconds(DEFAULTS.capacity_ttl_s), "--ttl", help="Cache TTL."),
    recompute: str = options.RECOMPUTE,
    pool_size: int = options.POOL_SIZE,
    pool_timeout: str = options.POOL_TIMEOUT,
    seed: int = options.SEED,
    redis_url: str = options.REDIS_URL,
    postgres_url: str = options.POSTGRES_URL,
    toxiproxy_url: str = options.TOXIPROXY_URL,
    allow_remote: bool = options.ALLOW_REMOTE,
    no_report: bool = typer.Option(False, "--no-report", help="Skip the HTML/Markdown reports."),
) -> None:
    """Find the knee: the highest throughput that still meets the p99 and error-rate SLOs."""
    plan = CapacityPlan(strategies=[s.strip() for s in strategy.split(",") if s.strip()], max_rate=max_rate,
                        steps=steps, hold_s=parse_duration(hold, "--hold"),
                        slo_p99_ms=parse_duration(slo_p99, "--slo-p99") * 1000, max_error_rate=max_error_rate)
    base = RunSettings(
        domain=domain, out=out, instances=instances, rows=rows, keys=keys, key_model=key_model, alpha=alpha,
        celebrity_share=celebrity_share, write_ratio=write_ratio, ttl_s=parse_duration(ttl, "--ttl"),
        recompute_ms=parse_duration(recompute, "--recompute") * 1000, pool_size=pool_size,
        pool_timeout_s=parse_duration(pool_timeout, "--pool-timeout"), seed=seed,
        stack=StackSettings(redis_url, postgres_url, toxiproxy_url, allow_remote=allow_remote), render=not no_report,
        explicit=options.typed_settings(ctx),
        **options.knob_settings_of(ctx))
    seconds = plan.steps * plan.hold_s
    with console.status(f"capacity: {len(plan.strategies)} × {plan.steps} steps of {plan.hold_s:g} s "
                        f"(~{seconds:.0f} s of load each) ...") as status:
        def on_progress(what: str, index: int, total: int) -> None:
            status.update(f"capacity: {what} ({index + 1}/{total}) ...")

        result = run_capacity(base, plan, on_progress)
    for capacity in result.capacities:
        console.print(steps_table(capacity))
        console.print(f"[bold]{capacity['note']}[/]")
    for path in result.report_paths:
        if path.name in (RunFolder.REPORT_HTML, "capacity.html", "capacity.md"):
            console.print(f"[bold]report:[/] {path}")
    console.print(f"[bold]folder:[/] {result.out_dir}")


def steps_table(capacity: dict) -> Table:
    run = capacity.get("run") or {}
    knee = (capacity.get("knee") or {}).get("step")
    table = Table(title=f"capacity of {run.get('strategy')} ({run.get('domain')})")
    for column in ("step", "offered/s", "achieved/s", "p50 ms", "p99 ms", "errors", "DB q/1k", "PG/1k",
                   "verdict"):
        table.add_column(column, justify="left" if column in ("step", "verdict") else "right")
    for step in capacity.get("steps") or []:
        pg = step.get("pg_calls_per_1k") if step.get("pg_calls_per_1k") is not None else step.get(
            "pg_xact_commit_per_1k")
        verdict = "[green]pass[/]" if step["passed"] else "[red]" + "; ".join(step["reasons"]) + "[/]"
        table.add_row(f"{step['step'] + 1}{' knee' if step['step'] == knee else ''}", _n(step["offered_per_s"]),
                      _n(step.get("achieved_per_s")), _n(step.get("p50_ms")), _n(step.get("p99_ms")),
                      "–" if step.get("error_rate") is None else f"{step['error_rate']:.4f}",
                      _n(step.get("db_queries_per_1k")), _n(pg), verdict)
    return table


def _n(value) -> str:
    if value is None:
        return "–"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
