"""Typer options shared by several commands, declared once (a default is only read, never changed)."""

from __future__ import annotations

import typer

from targets.settings import URL_ENV

# the stack: adopt servers instead of starting our own; from the environment, a password stays out of `ps`
REDIS_URL = typer.Option(None, "--redis-url", envvar=URL_ENV["redis_url"],
                         help="Adopt this Redis instead of starting Valkey.")
POSTGRES_URL = typer.Option(None, "--postgres-url", envvar=URL_ENV["postgres_url"],
                            help="Adopt this PostgreSQL instead of starting one.")
TOXIPROXY_URL = typer.Option(None, "--toxiproxy-url", help="Use this Toxiproxy instead of ours.")
ALLOW_REMOTE = typer.Option(False, "--allow-remote",
                            help="Accept URLs of other hosts (cachestorm sends load and faults there).")

# the workload, as `run` and `capacity` build it
DOMAIN = typer.Option("profiles", "--domain", help="profiles | catalog | counters | permissions")
OUT = typer.Option("runs", "--out", help="Folder for run folders.")
INSTANCES = typer.Option(1, "--instances", help="Target processes side by side.")
ROWS = typer.Option(10_000, "--rows", help="Rows seeded in PostgreSQL.")
KEYS = typer.Option(1_000, "--keys", help="Key space the traffic draws from.")
KEY_MODEL = typer.Option("zipf", "--key-model", help="zipf | hotspot | latest | uniform")
ALPHA = typer.Option(1.0, "--alpha", help="Zipf exponent.")
CELEBRITY_SHARE = typer.Option(0.0, "--celebrity-share", help="Share of requests for key 1.")
WRITE_RATIO = typer.Option(0.05, "--write-ratio", help="Share of writes.")
RECOMPUTE = typer.Option("50ms", "--recompute", help="DB cost of one recompute (pg_sleep).")
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
