"""Settings of one target process, parsed from `python -m targets` arguments and checked."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass

from cachestorm.core.defaults import DEFAULTS, LIMITS
from cachestorm.core.domains import DOMAINS
from cachestorm.core.errors import CachestormError
from cachestorm.core.urls import check_url

# The URLs may carry passwords: a parent passes them here, not as flags (a command line is visible to
# every local user in `ps`). A flag still wins.
URL_ENV = {"redis_url": "CACHESTORM_REDIS_URL", "postgres_url": "CACHESTORM_POSTGRES_URL"}


@dataclass
class TargetSettings:
    domain: str = DEFAULTS.domain
    strategy: str = DEFAULTS.strategy  # NAME[+PROTECTION...]; "default" = the domain's recommendation
    host: str = "127.0.0.1"
    port: int = DEFAULTS.target_port
    redis_url: str = "redis://127.0.0.1:6379/0"
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/cachestorm"
    rows: int = DEFAULTS.rows
    ttl: float | None = None           # seconds; None = the domain's default
    recompute_ms: float = DEFAULTS.recompute_ms  # cost of every DB read's recompute: what a cache saves
    db_capacity: int = DEFAULTS.target_db_capacity  # slots in PostgreSQL a recompute holds (its "cores"); 0 = unlimited
    recompute_mode: str = DEFAULTS.recompute_mode  # sleep (pg_sleep in a slot) | cpu (a calibrated CPU burn)
    pool_size: int = DEFAULTS.pool_size
    pool_timeout: float = DEFAULTS.pool_timeout_s
    hot_keys: int = DEFAULTS.hot_keys
    instance_id: str = ""
    redis_timeout_ms: float = DEFAULTS.redis_timeout_ms  # socket timeout of every Redis call
    breaker_failures: int = DEFAULTS.breaker_failures  # consecutive Redis failures that open the breaker
    breaker_cooldown_s: float = DEFAULTS.breaker_cooldown_s
    lock_ms: float = DEFAULTS.lock_ms  # TTL of a recompute lock or lease
    max_stale: float = DEFAULTS.max_stale_s  # stale-while-revalidate: seconds past expiry still served
    negative_ttl: float = DEFAULTS.negative_ttl_s
    jitter: float = DEFAULTS.jitter    # ±fraction of the TTL
    xfetch_beta: float = DEFAULTS.xfetch_beta
    stale_if_error_s: float = DEFAULTS.stale_if_error_s  # how long past expiry a value may serve as fallback
    flush_interval: float = DEFAULTS.flush_interval_s  # write-behind flush period (0 = only POST /counters/flush)
    revoke_bound: float | None = None  # permissions: grant after revoke+bound is a violation (default ttl+1)

    def effective_ttl(self, domain_default: float) -> float:
        return self.ttl if self.ttl is not None else domain_default

    def argv(self) -> list[str]:
        """The `python -m cachestorm.targets` arguments that start this target: who it is, then what
        differs from the defaults (the same table). Never the URLs: they may carry passwords and go by
        URL_ENV (a command line is visible to every local user)."""
        defaults = TargetSettings()
        argv: list[str] = []
        for action in build_parser()._actions:
            name = action.dest
            if not action.option_strings or name == "help" or name in URL_ENV:
                continue
            value = getattr(self, name)
            if value is None or (name not in _ALWAYS_RENDERED and value == getattr(defaults, name)):
                continue
            argv += [action.option_strings[0], str(value)]
        return argv


# on every target's command line, so `ps` and the logs say which target a process is
_ALWAYS_RENDERED = ("domain", "strategy", "host", "port", "instance_id")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m targets", description="A reference cached web service.")
    d = TargetSettings()
    p.add_argument("--domain", default=d.domain, help="|".join(DOMAINS))
    p.add_argument("--strategy", default=d.strategy, help="NAME[+PROTECTION...], or 'default'")
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port)
    for name, variable in URL_ENV.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=os.environ.get(variable, getattr(d, name)),
                       help=f"(default: ${variable}, else {getattr(d, name)})")
    p.add_argument("--rows", type=int, default=d.rows)
    p.add_argument("--ttl", type=float, default=None, help="cache TTL in s (default: per domain)")
    p.add_argument("--recompute-ms", type=float, default=d.recompute_ms)
    p.add_argument("--db-capacity", type=int, default=d.db_capacity)
    p.add_argument("--recompute-mode", default=d.recompute_mode, help="sleep | cpu")
    p.add_argument("--pool-size", type=int, default=d.pool_size)
    p.add_argument("--pool-timeout", type=float, default=d.pool_timeout)
    p.add_argument("--hot-keys", type=int, default=d.hot_keys)
    p.add_argument("--instance-id", default=d.instance_id)
    p.add_argument("--redis-timeout-ms", type=float, default=d.redis_timeout_ms)
    p.add_argument("--breaker-failures", type=int, default=d.breaker_failures)
    p.add_argument("--breaker-cooldown", type=float, default=d.breaker_cooldown_s, dest="breaker_cooldown_s")
    p.add_argument("--lock-ms", type=float, default=d.lock_ms)
    p.add_argument("--max-stale", type=float, default=d.max_stale)
    p.add_argument("--negative-ttl", type=float, default=d.negative_ttl)
    p.add_argument("--jitter", type=float, default=d.jitter)
    p.add_argument("--xfetch-beta", type=float, default=d.xfetch_beta)
    p.add_argument("--stale-if-error", type=float, default=d.stale_if_error_s, dest="stale_if_error_s")
    p.add_argument("--flush-interval", type=float, default=d.flush_interval)
    p.add_argument("--revoke-bound", type=float, default=None)
    return p


def parse_settings(argv: list[str] | None = None) -> TargetSettings:
    parser = build_parser()

    def fail(message: str):  # argparse prints usage + exits 2; we want one line and our error type
        raise CachestormError(f"{message} (see python -m targets --help)")

    parser.error = fail  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    settings = TargetSettings(**vars(args))
    validate(settings)
    return settings


def validate(s: TargetSettings) -> None:
    from cachestorm.targets.strategies import parse_spec

    from cachestorm.core.domains import domain_spec

    domain_spec(s.domain)
    parse_spec(s.strategy if s.strategy != "default" else "no-cache")
    check_url(s.redis_url, ("redis",), "--redis-url")
    check_url(s.postgres_url, ("postgresql", "postgres"), "--postgres-url")
    if not 0 < s.port < 65536:
        raise CachestormError(f"--port {s.port} is out of range 1..65535")
    for name, value in vars(s).items():  # a NaN passes every range check below
        if isinstance(value, float) and not math.isfinite(value):
            raise CachestormError(f"--{name.removesuffix('_s').replace('_', '-')} must be a finite number (got {value})")
    for name in ("rows", "pool_size", "hot_keys", "breaker_failures"):
        if getattr(s, name) < (0 if name == "hot_keys" else 1):
            raise CachestormError(f"--{name.replace('_', '-')} must be positive")
    for name in ("recompute_ms", "pool_timeout", "redis_timeout_ms", "lock_ms", "max_stale", "negative_ttl",
                 "jitter", "flush_interval"):
        if getattr(s, name) < 0:
            raise CachestormError(f"--{name.replace('_', '-')} must not be negative")
    if s.db_capacity < 0:
        raise CachestormError("--db-capacity must not be negative (0 = unlimited)")
    from cachestorm.targets.db import RECOMPUTE_MODES

    if s.recompute_mode not in RECOMPUTE_MODES:
        raise CachestormError(f"--recompute-mode {s.recompute_mode!r} is unknown; use {' or '.join(RECOMPUTE_MODES)}")
    if s.ttl is not None and not 0 < s.ttl <= LIMITS.max_ttl_s:
        raise CachestormError(f"--ttl must be positive and at most {LIMITS.max_ttl_s:g} s (30 days)")
    if not 0 <= s.jitter < 1:
        raise CachestormError(f"--jitter is a fraction of the TTL: at least 0 and below 1 (got {s.jitter:g})")
    if s.xfetch_beta < 0:
        raise CachestormError(f"--xfetch-beta must not be negative (got {s.xfetch_beta:g}; 1 is the paper's default)")
    if s.recompute_ms > LIMITS.max_recompute_ms:
        raise CachestormError(f"--recompute-ms must be at most {LIMITS.max_recompute_ms:g} (a minute)")
    if not 0 < s.pool_timeout <= LIMITS.max_pool_timeout_s:
        raise CachestormError(f"--pool-timeout must be more than 0 and at most {LIMITS.max_pool_timeout_s:g} s")
    if s.rows > LIMITS.max_rows or s.db_capacity > LIMITS.max_db_capacity:
        raise CachestormError(f"--rows is at most {LIMITS.max_rows:,} and --db-capacity at most {LIMITS.max_db_capacity}")
    if s.pool_size > LIMITS.max_db_connections:
        raise CachestormError(f"--pool-size must be at most {LIMITS.max_db_connections} (PostgreSQL's connections)")
