"""Typer options shared by several commands, declared once (a default is only read, never changed)."""

from __future__ import annotations

import typer

from cachestorm.core.defaults import DEFAULTS
from cachestorm.core.domains import DOMAINS
from cachestorm.core.durations import parse_duration
from cachestorm.targets.settings import URL_ENV
from cachestorm.traffic.models.keys import KEY_MODELS


def seconds(value: float) -> str:
    """A default in seconds as a duration flag shows it (30s)."""
    return f"{value:g}s"


def milliseconds(value: float) -> str:
    return f"{value:g}ms"


# the stack: adopt servers instead of starting our own; from the environment, a password stays out of `ps`
REDIS_URL = typer.Option(None, "--redis-url", envvar=URL_ENV["redis_url"],
                         help="Adopt this Redis instead of starting Valkey.")
POSTGRES_URL = typer.Option(None, "--postgres-url", envvar=URL_ENV["postgres_url"],
                            help="Adopt this PostgreSQL instead of starting one.")
TOXIPROXY_URL = typer.Option(None, "--toxiproxy-url", help="Use this Toxiproxy instead of ours.")
ALLOW_REMOTE = typer.Option(False, "--allow-remote",
                            help="Accept URLs of other hosts (cachestorm sends load and faults there).")

# the workload, as `run`, `matrix` and `capacity` build it (defaults: cachestorm.core.defaults)
DOMAIN = typer.Option(DEFAULTS.domain, "--domain", help=" | ".join(DOMAINS))
OUT = typer.Option(DEFAULTS.out, "--out", help="Folder for run folders.")
INSTANCES = typer.Option(DEFAULTS.instances, "--instances", help="Target processes side by side.")
ROWS = typer.Option(DEFAULTS.rows, "--rows", help="Rows seeded in PostgreSQL.")
KEYS = typer.Option(DEFAULTS.keys, "--keys", help="Key space the traffic draws from.")
KEY_MODEL = typer.Option(DEFAULTS.key_model, "--key-model", help=" | ".join(KEY_MODELS))
ALPHA = typer.Option(DEFAULTS.alpha, "--alpha", help="Zipf exponent.")
WRITE_RATIO = typer.Option(DEFAULTS.write_ratio, "--write-ratio", help="Share of writes.")
POOL_SIZE = typer.Option(DEFAULTS.pool_size, "--pool-size", help="DB pool size per target.")
POOL_TIMEOUT = typer.Option(seconds(DEFAULTS.pool_timeout_s), "--pool-timeout", help="DB pool acquire timeout.")
SEED = typer.Option(DEFAULTS.seed, "--seed", help="Seed of the traffic models.")
RATE = typer.Option(None, "--rate", help="Open model: target arrivals per second.")
RETRY = typer.Option(DEFAULTS.retry, "--retry", help="none | naive:N | backoff:N | budget:R")


def celebrity_share_option(default: float = DEFAULTS.celebrity_share):
    return typer.Option(default, "--celebrity-share", help="Share of requests for key 1.")


def recompute_option(default_ms: float = DEFAULTS.recompute_ms):
    return typer.Option(milliseconds(default_ms), "--recompute",
                        help="DB cost of one recompute (held in one of --db-capacity slots).")


CELEBRITY_SHARE = celebrity_share_option()
RECOMPUTE = recompute_option()


# units a RunSettings field may carry after the flag's name (--duration -> duration_s, --recompute -> recompute_ms)
_FIELD_UNITS = ("", "_s", "_ms")


def typed_settings(ctx: typer.Context, *also: str) -> frozenset[str]:
    """The RunSettings fields the user set (command line or environment, not a default), plus `also`.

    An experiment's `run:` section only fills the others. Generic by name, so a new flag is covered
    as soon as its RunSettings field is named after it (optionally with a unit suffix).
    """
    from dataclasses import fields

    from typer._click.core import ParameterSource  # Typer vendors click

    from cachestorm.conductor import RunSettings

    known = {f.name for f in fields(RunSettings)}
    typed = set(also)
    for name in ctx.params:
        if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None):
            continue
        typed.update(field for field in (name + unit for unit in _FIELD_UNITS) if field in known)
    return frozenset(typed)


# the incident: a database that saturates, clients that give up and retry, the protections' knobs
# (None: the target's own default, shown in the help). Every command that runs load takes them: `@with_knobs`
DB_CAPACITY = typer.Option(DEFAULTS.db_capacity, "--db-capacity",
                           help="Recomputes PostgreSQL runs at once (its cores); the rest queue, holding connections. 0 = unlimited.")
RECOMPUTE_MODE = typer.Option(DEFAULTS.recompute_mode, "--recompute-mode",
                              help="sleep (pg_sleep in a slot) | cpu (a calibrated CPU burn in PostgreSQL)")
REQUEST_TIMEOUT = typer.Option(seconds(DEFAULTS.request_timeout_s), "--request-timeout",
                               help="Client timeout per attempt; a timeout is its own error kind and is retried.")
JITTER = typer.Option(None, "--jitter", help=f"+jitter: ±fraction of the TTL (default {DEFAULTS.jitter:g}).")
XFETCH_BETA = typer.Option(None, "--xfetch-beta", help=f"+xfetch: β, how early to refresh (default {DEFAULTS.xfetch_beta:g}).")
LOCK_MS = typer.Option(None, "--lock-ms", "--lease-ms",
                       help=f"+lock/+lease: TTL of the lock or lease in ms (default {DEFAULTS.lock_ms:g}).")
MAX_STALE = typer.Option(None, "--max-stale",
                         help=f"stale-while-revalidate: how long past expiry a value is served (default {DEFAULTS.max_stale_s:g}s).")
NEGATIVE_TTL = typer.Option(None, "--negative-ttl",
                            help=f"+negative: how long an absent key is cached (default {DEFAULTS.negative_ttl_s:g}s).")
MISSING_SHARE = typer.Option(DEFAULTS.missing_share, "--missing-share", help="Share of reads for ids that do not exist.")
OWNER_READ_SHARE = typer.Option(DEFAULTS.owner_read_share, "--owner-read-share",
                                help="profiles: share of reads by the owner, past the cache (read-your-writes).")

# parameter name -> (type, option): the flags `@with_knobs` adds
KNOBS = {"db_capacity": (int, DB_CAPACITY), "recompute_mode": (str, RECOMPUTE_MODE),
         "request_timeout": (str, REQUEST_TIMEOUT), "jitter": (float, JITTER), "xfetch_beta": (float, XFETCH_BETA),
         "lock_ms": (float, LOCK_MS), "max_stale": (str, MAX_STALE), "negative_ttl": (str, NEGATIVE_TTL),
         "missing_share": (float, MISSING_SHARE), "owner_read_share": (float, OWNER_READ_SHARE)}


def with_knobs(command):
    """Add the KNOBS flags to a Typer command (declared once, here); it reads them by `knob_settings_of(ctx)`."""
    import functools
    import inspect

    signature = inspect.signature(command, eval_str=True)
    added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option, annotation=kind)
             for name, (kind, option) in KNOBS.items()]

    @functools.wraps(command)
    def with_knob_flags(*args, **kwargs):
        for name in KNOBS:
            kwargs.pop(name, None)
        return command(*args, **kwargs)

    with_knob_flags.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *added])
    with_knob_flags.__annotations__ = {**command.__annotations__, **{name: kind for name, (kind, _) in KNOBS.items()}}
    return with_knob_flags


def knob_settings(*, db_capacity: int, recompute_mode: str, request_timeout: str, jitter: float | None,
                  xfetch_beta: float | None, lock_ms: float | None, max_stale: str | None, negative_ttl: str | None,
                  missing_share: float, owner_read_share: float) -> dict:
    """The flags above as RunSettings fields (durations parsed)."""
    return {"db_capacity": db_capacity, "recompute_mode": recompute_mode,
            "request_timeout_s": parse_duration(request_timeout, "--request-timeout"), "jitter": jitter,
            "xfetch_beta": xfetch_beta, "lock_ms": lock_ms,
            "max_stale_s": None if max_stale is None else parse_duration(max_stale, "--max-stale"),
            "negative_ttl_s": None if negative_ttl is None else parse_duration(negative_ttl, "--negative-ttl"),
            "missing_share": missing_share, "owner_read_share": owner_read_share}


def knob_settings_of(ctx: typer.Context) -> dict:
    """`knob_settings` of this command's knob flags (`@with_knobs` gave it them)."""
    import inspect

    return knob_settings(**{name: ctx.params[name] for name in inspect.signature(knob_settings).parameters})
