"""`cachestorm bench ...`: benchmarks that print ratios measured side by side in one run."""

from __future__ import annotations

import typer

from cachestorm.core import plugins
from cachestorm.core.errors import CachestormError

app = typer.Typer(help="Benchmarks: each prints ratios measured side by side in one run.", no_args_is_help=True)


def _call(spec: str, **kwargs) -> None:
    try:
        function = plugins.load(spec, "benchmark")
    except plugins.PluginError as exc:
        if exc.missing is None:
            raise
        raise CachestormError(f"this benchmark is not available ({exc.missing} is missing)") from exc
    function(**kwargs)


@app.command("proxy")
def proxy(requests: int = typer.Option(200_000, min=1, help="GETs per redis-benchmark round."),
          clients: int = typer.Option(8, min=1, help="redis-benchmark -c")) -> None:
    """Redis GETs direct vs through our proxy, with and without a toxic, and through the real Toxiproxy
    when one is beside the checkout (redis-benchmark): throughput, p50/p99, CPU per GET, ratios."""
    _call("cachestorm.bench.proxy:main", requests=requests, clients=clients)


@app.command("target")
def target(seconds: int = typer.Option(10, min=1, help="Seconds per round."),
           connections: int = typer.Option(10, min=1, help="Concurrent connections.")) -> None:
    """Cache-hit GETs/s of a target vs a bare Starlette endpoint doing one Redis GET."""
    _call("cachestorm.bench.target:main", seconds=seconds, connections=connections)


@app.command("locust")
def locust(seconds: int = typer.Option(15, min=1, help="Seconds per Locust run.")) -> None:
    """cachestorm's Locust user (skewed keys + history) vs a bare FastHttpUser, requests/s."""
    _call("cachestorm.bench.locust:main", seconds=seconds)


@app.command("open-model")
def open_model() -> None:
    """Open model holds its rate; a 2 s server pause shows in its p99 but not in a closed model's."""
    _call("cachestorm.bench.open_model:main")


@app.command("checker")
def checker(operations: int = typer.Option(1_000_000, min=1, help="Operations in the synthetic history.")) -> None:
    """Consistency checker speed on a synthetic history."""
    _call("cachestorm.reports.bench_checker:main", operations=operations)


@app.command("incident")
def incident(out: str = typer.Option("runs/bench-incident", "--out", help="Folder for the runs' folders."),
             retry_storm: bool = typer.Option(True, "--retry-storm/--no-retry-storm",
                                              help="Also retry-storm, naive:3 vs budget:0.1 (~3 more minutes).")) -> None:
    """The incident on its defaults: unprotected vs protected ratios side by side, and the warm-up's time."""
    from cachestorm.core.paths import check_output_folder

    check_output_folder(out, "--out")  # before anything starts
    _call("cachestorm.bench.incident:main", out=out, retry_storm=retry_storm)


@app.command("report")
def report(minutes: list[float] = typer.Option([5.0, 15.0, 60.0], "--minutes", min=0.5,
                                               help="Run lengths to report on (repeatable)."),
           rate: float = typer.Option(200.0, min=1.0, help="Requests/s of the synthetic runs."),
           instances: int = typer.Option(2, min=1, help="Targets scraped (metrics.jsonl records per second)."),
           keep: str = typer.Option(None, "--keep", help="Write the run folders here and keep them "
                                                          "(reused on the next call) instead of a temporary folder.")) -> None:
    """Analysis + rendering time and peak RSS of reports on synthetic run folders of 5, 15 and 60 minutes
    (metrics at 1/s per target, PostgreSQL stats, HDR latency per second, a fault, histories), and the
    growth exponent: 1 is linear in the run's length."""
    _call("cachestorm.bench.report:main", minutes=tuple(minutes), rate=rate, instances=instances, keep=keep)


@app.command("keyspace")
def keyspace(max_keys: int = typer.Option(1_000_000, "--max", min=10_000, help="Largest key space (10000000 for 10 M)."),
             duration: str = typer.Option("5s", help="Load per run."),
             rate: int = typer.Option(200, min=1, help="Requests/s per run."),
             repeat: int = typer.Option(1, min=0, help="Runs per size after the seeding one (rows already there)."),
             workdir: str = typer.Option(None, help="Folder for the stack and the runs (default: a new temporary one)."),
             json_out: str = typer.Option(None, "--json", help="Also write every figure to this file."),
             min_keys: int = typer.Option(0, "--min", min=0, help="Skip the key spaces below this.")) -> None:
    """Seconds from `run` to the first request by key space (seed, warm, start-up; truth after the
    load) and the peak RSS of every process (run, targets, Locust, Valkey, PostgreSQL), per key."""
    _call("cachestorm.bench.keyspace:main", max_keys=max_keys, duration=duration, rate=rate, repeat=repeat,
          workdir=workdir, json_out=json_out, min_keys=min_keys)
