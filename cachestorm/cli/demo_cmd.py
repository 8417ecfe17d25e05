"""`cachestorm demo`: the hot-key incident in miniature, measured, in a few minutes."""

from __future__ import annotations

import typer
from rich.console import Console

from cachestorm.cli import options
from cachestorm.conductor import RunSettings, parse_duration
from cachestorm.matrix import run_matrix

console = Console()

DEMO_STRATEGIES = ["cache-aside", "cache-aside+coalescing", "cache-aside+lock"]


def demo(
    ctx: typer.Context,
    duration: str = typer.Option("25s", "--duration", help="Load per strategy."),
    out: str = typer.Option("runs", "--out", help="Folder for the demo's run folders."),
    strategies: str = typer.Option(",".join(DEMO_STRATEGIES), "--strategies", help="Comma-separated strategies."),
    rate: float = typer.Option(300.0, "--rate", help="Arrivals per second (open model)."),
) -> None:
    """Same traffic, same hot-key expiry, several strategies: DB load, latency and errors compared."""
    # A warm cache, a steady arrival rate (open model: the herd is not capped by the user count),
    # and one celebrity key: the hot-key expiry at 10 s is then the only thing that misses.
    base = RunSettings(duration_s=parse_duration(duration), users=40, spawn_rate=40, rate=rate, keys=300,
                       alpha=1.0, celebrity_share=0.2, recompute_ms=100, pool_size=8, pool_timeout_s=1.0,
                       ttl_s=300, write_ratio=0.02, warm=True,
                       # the demo's own choices count as typed: the experiment's `run:` does not override them
                       explicit=options.typed_settings(ctx, "domain", "duration_s", "users", "rate", "retry"))
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    with console.status("demo") as status:
        result = run_matrix(base, names, ["hot-key-expiry"], out, name="demo",
                            on_progress=lambda what, i, n: status.update(f"demo {i + 1}/{n}: {what}"))
    _print(result)


def _print(result) -> None:
    from cachestorm.summary import print_summary

    for run_dir in result.run_dirs:
        print_summary(run_dir, console)
    for path in result.report_paths:
        console.print(f"[bold]report:[/] {path}")
