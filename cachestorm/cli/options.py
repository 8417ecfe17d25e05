"""Typer options shared by several commands, declared once (a default is only read, never changed)."""

from __future__ import annotations

import typer

from cachestorm.conductor import RunSettings, parse_duration
from cachestorm.core.domains import DOMAINS
from cachestorm.targets.settings import URL_ENV, TargetSettings

# the stack: adopt servers instead of starting our own; from the environment, a password stays out of `ps`
REDIS_URL = typer.Option(None, "--redis-url", envvar=URL_ENV["redis_url"],
                         help="Adopt this Redis instead of starting Valkey.")
POSTGRES_URL = typer.Option(None, "--postgres-url", envvar=URL_ENV["postgres_url"],
                            help="Adopt this PostgreSQL instead of starting one.")
TOXIPROXY_URL = typer.Option(None, "--toxiproxy-url", help="Use this Toxiproxy instead of ours.")
ALLOW_REMOTE = typer.Option(False, "--allow-remote",
                            help="Accept URLs of other hosts (cachestorm sends load and faults there).")

# the workload, as `run` and `capacity` build it
DOMAIN = typer.Option("profiles", "--domain", help=" | ".join(DOMAINS))
OUT = typer.Option("runs", "--out", help="Folder for run folders.")
INSTANCES = typer.Option(1, "--instances", help="Target processes side by side.")
ROWS = typer.Option(10_000, "--rows", help="Rows seeded in PostgreSQL.")
KEYS = typer.Option(1_000, "--keys", help="Key space the traffic draws from.")
KEY_MODEL = typer.Option("zipf", "--key-model", help="zipf | hotspot | latest | uniform")
ALPHA = typer.Option(1.0, "--alpha", help="Zipf exponent.")
CELEBRITY_SHARE = typer.Option(0.0, "--celebrity-share", help="Share of requests for key 1.")
WRITE_RATIO = typer.Option(0.05, "--write-ratio", help="Share of writes.")
RECOMPUTE = typer.Option("50ms", "--recompute", help="DB cost of one recompute (held in one of --db-capacity slots).")
POOL_SIZE = typer.Option(10, "--pool-size", help="DB pool size per target.")
POOL_TIMEOUT = typer.Option("1s", "--pool-timeout", help="DB pool acquire timeout.")
SEED = typer.Option(42, "--seed", help="Seed of the traffic models.")


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
# (None: the target's own default, shown in the help; targets/settings.py owns those)
_TARGET = TargetSettings()
DB_CAPACITY = typer.Option(RunSettings.db_capacity, "--db-capacity",
                           help="Recomputes PostgreSQL runs at once (its cores); the rest queue, holding connections. 0 = unlimited.")
RECOMPUTE_MODE = typer.Option(RunSettings.recompute_mode, "--recompute-mode",
                              help="sleep (pg_sleep in a slot) | cpu (a calibrated CPU burn in PostgreSQL)")
REQUEST_TIMEOUT = typer.Option(f"{RunSettings.request_timeout_s:g}s", "--request-timeout",
                               help="Client timeout per attempt; a timeout is its own error kind and is retried.")
JITTER = typer.Option(None, "--jitter", help=f"+jitter: ±fraction of the TTL (default {_TARGET.jitter:g}).")
XFETCH_BETA = typer.Option(None, "--xfetch-beta", help=f"+xfetch: β, how early to refresh (default {_TARGET.xfetch_beta:g}).")
LOCK_MS = typer.Option(None, "--lock-ms", "--lease-ms",
                       help=f"+lock/+lease: TTL of the lock or lease in ms (default {_TARGET.lock_ms:g}).")
MAX_STALE = typer.Option(None, "--max-stale",
                         help=f"stale-while-revalidate: how long past expiry a value is served (default {_TARGET.max_stale:g}s).")
NEGATIVE_TTL = typer.Option(None, "--negative-ttl",
                            help=f"+negative: how long an absent key is cached (default {_TARGET.negative_ttl:g}s).")
MISSING_SHARE = typer.Option(0.0, "--missing-share", help="Share of reads for ids that do not exist.")
OWNER_READ_SHARE = typer.Option(0.0, "--owner-read-share",
                                help="profiles: share of reads by the owner, past the cache (read-your-writes).")


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
    """`knob_settings` of this command's own knob flags (every command declaring them passes them so)."""
    import inspect

    return knob_settings(**{name: ctx.params[name] for name in inspect.signature(knob_settings).parameters})
