"""`cachestorm run`: one strategy, one traffic model, optionally one experiment -> one run folder."""

from __future__ import annotations

import typer
from rich.console import Console

from cachestorm.cli import options
from cachestorm.conductor import RunSettings, parse_duration
from cachestorm.conductor import run as run_once
from cachestorm.core.defaults import DEFAULTS
from cachestorm.core.errors import CachestormError
from cachestorm.core.runfolder import RunFolder
from cachestorm.stack import StackSettings
from cachestorm.summary import print_summary

console = Console()

@options.with_knobs
def run(
    ctx: typer.Context,
    strategy: str = typer.Option(DEFAULTS.strategy, "--strategy", "-s", help="NAME[+PROTECTION...], e.g. cache-aside+coalescing; default: the domain's recommended one"),
    domain: str = options.DOMAIN,
    duration: str = typer.Option(options.seconds(DEFAULTS.duration_s), "--duration", "-d", help="How long the load runs (30s, 2m)."),
    users: int = typer.Option(DEFAULTS.users, "--users", "-u", help="Locust users (closed model)."),
    spawn_rate: float = typer.Option(DEFAULTS.spawn_rate, "--spawn-rate", help="Users started per second."),
    rate: float = options.RATE,
    shape: str = typer.Option(None, "--shape", help="steady | ramp | step | spike | diurnal"),
    shape_args: str = typer.Option(None, "--shape-args", help="Shape parameters, e.g. 'step=200,hold=10s'."),
    experiment: str = typer.Option(None, "--experiment", "-e", help="A ready experiment name or a YAML file."),
    experiment_at: str = typer.Option(None, "--experiment-at", help="Move the experiment's first fault to this second of the load."),
    out: str = options.OUT,
    label: str = typer.Option(None, "--label", help="Name of the run folder (default: domain-strategy)."),
    instances: int = options.INSTANCES,
    rows: int = options.ROWS,
    keys: int = options.KEYS,
    key_model: str = options.KEY_MODEL,
    alpha: float = options.ALPHA,
    celebrity_share: float = options.CELEBRITY_SHARE,
    hot_keys: int = typer.Option(DEFAULTS.hot_keys, "--hot-keys", help="Keys 1..N count as hot."),
    write_ratio: float = options.WRITE_RATIO,
    preset: str = typer.Option(None, "--preset", help="ycsb-a..ycsb-f | twitter-median | meta-etc"),
    retry: str = options.RETRY,
    ttl: str = typer.Option(None, "--ttl", help="Cache TTL (default: the domain's, e.g. 30s for profiles)."),
    recompute: str = options.RECOMPUTE,
    pool_size: int = options.POOL_SIZE,
    pool_timeout: str = options.POOL_TIMEOUT,
    seed: int = options.SEED,
    redis_url: str = options.REDIS_URL,
    postgres_url: str = options.POSTGRES_URL,
    toxiproxy_url: str = options.TOXIPROXY_URL,
    allow_remote: bool = options.ALLOW_REMOTE,
    no_report: bool = typer.Option(False, "--no-report", help="Skip rendering the report."),
    warm: bool = typer.Option(DEFAULTS.warm, "--warm/--cold", help="Prefill every key before the load, expiries spread over the TTL (default), or start cold."),
) -> None:
    """Run targets + Locust (+ chaos) once and write a run folder."""
    settings = RunSettings(
        strategy=strategy, domain=domain, duration_s=parse_duration(duration, "--duration"), users=users,
        spawn_rate=spawn_rate, rate=rate, shape=shape, shape_args=shape_args, experiment=experiment,
        experiment_at_s=parse_duration(experiment_at, "--experiment-at") if experiment_at else None,
        out=out, label=label, instances=instances, rows=rows, keys=keys, key_model=key_model, alpha=alpha,
        celebrity_share=celebrity_share, hot_keys=hot_keys, write_ratio=write_ratio, preset=preset, retry=retry,
        ttl_s=parse_duration(ttl, "--ttl") if ttl else None, recompute_ms=parse_duration(recompute, "--recompute") * 1000,
        pool_size=pool_size, pool_timeout_s=parse_duration(pool_timeout, "--pool-timeout"), seed=seed,
        stack=StackSettings(redis_url, postgres_url, toxiproxy_url, allow_remote=allow_remote), render=not no_report, warm=warm,
        explicit=options.typed_settings(ctx), **options.knob_settings_of(ctx),
    )
    with console.status(f"running {strategy} for {settings.duration_s:.0f} s ..."):
        run_dir = run_once(settings)
    print_summary(run_dir, console)
    why = RunFolder(run_dir).incomplete()
    if why:  # e.g. a fault that failed to apply: the numbers are there, the experiment is not
        raise CachestormError(f"the run is marked failed ({why}); see {run_dir}", exit_code=1)
