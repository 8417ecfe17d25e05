"""The conductor: one run = stack + target instances + Locust + chaos + scraping -> one run folder.

Everything started here is stopped here, whatever happens (errors, Ctrl-C): the `finally`
blocks revert faults first, then stop load, targets and the stack, in that order.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import httpx

from cachestorm import __version__, reports
from cachestorm.chaos.context import DEFAULT_LEDGER
from cachestorm.chaos.ledger import refuse_active_faults
from cachestorm.chaos.self_expiry import unguarded_warning
from cachestorm.core import interrupts
from cachestorm.core.defaults import DEFAULTS, LIMITS
from cachestorm.core.domains import DOMAINS, domain_spec
from cachestorm.core.durations import parse_duration
from cachestorm.core.errors import CachestormError
from cachestorm.core.processes import child_env, free_port, spawn
from cachestorm.core.runfolder import Journal, RunFolder
from cachestorm.scrape import Scraper
from cachestorm.stack import (
    StackSettings,
    StackState,
    guardian,
    health,
    load_state,
    restart_redis,
    save_state,
    start_stack,
    stop_stack,
    validate_stack_settings,
)
from cachestorm.stack.watch import DependencyWatch
from cachestorm.targets.process import TARGET_MODULE, TargetProcess
from cachestorm.targets.settings import TargetSettings
from cachestorm.traffic import locustfile
from cachestorm.traffic.recording import merge_run
from cachestorm.traffic.settings import check_options, traffic_argv

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RunSettings:
    strategy: str = DEFAULTS.strategy  # "default": the domain's recommended strategy
    domain: str = DEFAULTS.domain
    duration_s: float = DEFAULTS.duration_s
    users: int = DEFAULTS.users
    spawn_rate: float = DEFAULTS.spawn_rate
    rate: float | None = None            # open model (requests/s); None = closed model
    shape: str | None = None
    shape_args: str | None = None
    experiment: str | None = None
    experiment_at_s: float | None = None  # move the experiment's first fault to this second of the load
    out: str = DEFAULTS.out
    label: str | None = None
    instances: int = DEFAULTS.instances
    rows: int = DEFAULTS.rows
    keys: int = DEFAULTS.keys
    key_model: str = DEFAULTS.key_model
    alpha: float = DEFAULTS.alpha
    celebrity_share: float = DEFAULTS.celebrity_share
    hot_keys: int = DEFAULTS.hot_keys
    write_ratio: float = DEFAULTS.write_ratio
    preset: str | None = None            # a named workload (YCSB A-F, twitter-median, meta-etc)
    retry: str = DEFAULTS.retry
    ttl_s: float | None = None           # None: the domain's default TTL
    recompute_ms: float = DEFAULTS.recompute_ms
    recompute_mode: str = DEFAULTS.recompute_mode  # sleep | cpu (docs/design.md, "The incident's defaults")
    db_capacity: int = DEFAULTS.db_capacity  # recomputes PostgreSQL runs at once (0 = unlimited)
    pool_size: int = DEFAULTS.pool_size
    pool_timeout_s: float = DEFAULTS.pool_timeout_s
    request_timeout_s: float = DEFAULTS.request_timeout_s  # the client gives up (and may retry) after this
    # the protections' knobs; None: the target's own default (targets/settings.py)
    jitter: float | None = None
    xfetch_beta: float | None = None
    lock_ms: float | None = None         # the lock's or lease's TTL
    max_stale_s: float | None = None
    negative_ttl_s: float | None = None
    missing_share: float = DEFAULTS.missing_share  # reads for ids N+1..2N: cold, absent beyond --rows (negative caching)
    owner_read_share: float = DEFAULTS.owner_read_share  # profiles: reads by the owner, past the cache (read-your-writes)
    seed: int = DEFAULTS.seed
    target_args: list[str] = field(default_factory=list)
    locust_args: list[str] = field(default_factory=list)
    stack: StackSettings = field(default_factory=StackSettings)
    render: bool = True
    explicit: frozenset[str] = frozenset()   # fields the user set; an experiment's `run:` fills the rest
    warm: bool = DEFAULTS.warm           # prefill every key before the load: steady state is a warm cache

    def validate(self) -> None:
        if self.domain not in DOMAINS:
            raise CachestormError(f"unknown domain {self.domain!r}; choose one of {', '.join(DOMAINS)}")
        validate_numbers(self)
        if not 0 < self.duration_s <= LIMITS.max_duration_s:
            raise CachestormError(f"--duration must be positive and at most {LIMITS.max_duration_s / 3600:g}h, e.g. 30s "
                                  f"(got {self.duration_s:g}s)")
        if not 1 <= self.users <= LIMITS.max_users:
            raise CachestormError(f"--users must be between 1 and {LIMITS.max_users:,} (one Locust process; got {self.users})")
        if not 0 < self.spawn_rate <= LIMITS.max_spawn_rate:
            raise CachestormError(f"--spawn-rate must be more than 0 and at most {LIMITS.max_spawn_rate:g} users/s "
                                  f"(got {self.spawn_rate:g})")
        if self.instances < 1 or self.instances > 16:
            raise CachestormError("--instances must be between 1 and 16")
        if self.rate is not None and not (math.isfinite(self.rate) and self.rate > 0):
            raise CachestormError(f"--rate must be a positive, finite number of requests per second (got {self.rate})")
        if self.rate is not None and self.rate > LIMITS.max_rate:
            raise CachestormError(f"--rate {self.rate:g}/s is more than one Locust process schedules on time "
                                  f"(at most {LIMITS.max_rate:,.0f} arrivals/s)")
        validate_workload(self)
        validate_label(self)
        validate_strategy(self.strategy)
        validate_stack_settings(self.stack)
        validate_traffic(self)
        validate_target_args(self)



def _flag(name: str) -> str:
    """A RunSettings field as its flag names it (recompute_ms -> --recompute)."""
    if name == "lock_ms":  # the one flag that keeps its unit
        return "--lock-ms"
    return "--" + name.removesuffix("_ms").removesuffix("_s").replace("_", "-")


def validate_numbers(settings: RunSettings) -> None:
    """Every number finite (`--alpha nan`, `--spawn-rate inf` used to pass every range check)."""
    for item in fields(settings):
        value = getattr(settings, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise CachestormError(f"{_flag(item.name)} must be a finite number (got {value})")


def validate_workload(settings: RunSettings) -> None:
    """The values whose range the parts would not refuse, or refuse only once the stack is up."""
    if settings.experiment is not None and not settings.experiment.strip():
        raise CachestormError("--experiment: give a ready experiment's name or a YAML file (got an empty string)")
    if "experiment_at_s" in settings.explicit and settings.experiment_at_s is not None and not settings.experiment:
        raise CachestormError("--experiment-at moves an experiment's first fault: give --experiment too")
    if settings.ttl_s is not None and not 0 < settings.ttl_s <= LIMITS.max_ttl_s:
        raise CachestormError(f"--ttl must be more than 0s and at most {LIMITS.max_ttl_s / 86400:g} days "
                              f"(got {settings.ttl_s:g}s); leave it out for the domain's default")
    for flag, value in (("--rows", settings.rows), ("--keys", settings.keys)):
        if not 1 <= value <= LIMITS.max_rows:
            raise CachestormError(f"{flag} must be between 1 and {LIMITS.max_rows:,} (got {value})")
    if not 0 <= settings.db_capacity <= LIMITS.max_db_capacity:
        raise CachestormError(f"--db-capacity must be between 0 (unlimited) and {LIMITS.max_db_capacity} (got {settings.db_capacity})")
    if not 1 <= settings.hot_keys <= settings.keys:
        raise CachestormError(f"--hot-keys must be between 1 and --keys ({settings.keys}) (got {settings.hot_keys})")
    if not 0 <= settings.recompute_ms <= LIMITS.max_recompute_ms:
        raise CachestormError(f"--recompute must be between 0 and {LIMITS.max_recompute_ms / 1000:g}s "
                              f"(got {settings.recompute_ms / 1000:g}s)")
    if not 0 < settings.pool_timeout_s <= LIMITS.max_pool_timeout_s:
        raise CachestormError(f"--pool-timeout must be more than 0s and at most {LIMITS.max_pool_timeout_s:g}s "
                              f"(got {settings.pool_timeout_s:g}s)")
    if settings.pool_size * settings.instances > LIMITS.max_db_connections:
        raise CachestormError(f"--pool-size {settings.pool_size} x --instances {settings.instances} is more than "
                              f"{LIMITS.max_db_connections} PostgreSQL connections (its max_connections is 300)")


_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@,-]*")
_FOLDER_NAME_BYTES = 255 - len("20250101-000000--99")  # a run folder is <stamp>-<label>[-n]


def validate_label(settings: RunSettings) -> None:
    """A run folder is named <stamp>-<label>: a name the file system takes (not too long, no `/`)."""
    if settings.label is not None and "label" in settings.explicit:  # typed: the user's own name
        if not _LABEL.fullmatch(settings.label):
            raise CachestormError(f"--label {settings.label[:40]!r}: use letters, digits and . _ + = @ , - "
                                  "(starting with a letter or digit)")
        if len(settings.label) > LIMITS.max_label_chars:
            raise CachestormError(f"--label is at most {LIMITS.max_label_chars} characters (got {len(settings.label)})")
        return
    label = settings.label or f"{settings.domain}-{resolve_strategy(settings.strategy, settings.domain)}" + (
        f"-{Path(settings.experiment).stem}" if settings.experiment else "")
    if len(label.encode()) > _FOLDER_NAME_BYTES:
        raise CachestormError(f"the run folder's name ({label[:40]}...) would be longer than a file name may be; "
                              "give a shorter experiment file name (or --label)")


def validate_traffic(settings: RunSettings) -> None:
    """Check the Locust options with the traffic's own (pure) rules before anything starts."""
    check_options(traffic_options(settings), settings.domain)


def validate_target_args(settings: RunSettings) -> None:
    """Check the target options with the targets' own rules (one line on bad input) before anything starts."""
    from cachestorm.targets.settings import parse_settings, validate

    target = target_settings(settings, 1, "check")
    validate(target)
    if settings.target_args:  # extra flags: the targets' own parser reads them as the target will
        placeholders = ["--redis-url", "redis://127.0.0.1:6379/0",  # the stack comes later
                        "--postgres-url", "postgresql://postgres@127.0.0.1:5432/x"]
        parse_settings(target.argv() + settings.target_args + placeholders)


def resolve_strategy(spec: str, domain: str) -> str:
    """`default` -> the domain's recommended strategy (e.g. counters -> write-behind)."""
    return DOMAINS[domain].default_strategy if spec == "default" else spec


def validate_strategy(spec: str) -> None:
    from cachestorm.targets.strategies import parse_spec

    if spec != "default":
        parse_spec(spec)


def _seconds(value) -> float:
    return parse_duration(value)


def _milliseconds(value) -> float:
    return parse_duration(value) * 1000


# an experiment's `run:` key (chaos.experiment.RUN_FIELDS) -> (RunSettings field, conversion)
RECOMMENDABLE = {"domain": ("domain", None), "strategy": ("strategy", None), "retry": ("retry", None),
                 "duration": ("duration_s", _seconds), "users": ("users", None), "rate": ("rate", float),
                 "keys": ("keys", None), "key_model": ("key_model", None), "alpha": ("alpha", float),
                 "celebrity_share": ("celebrity_share", float), "write_ratio": ("write_ratio", float), "ttl": ("ttl_s", _seconds),
                 "recompute": ("recompute_ms", _milliseconds), "recompute_mode": ("recompute_mode", None),
                 "db_capacity": ("db_capacity", None), "pool_size": ("pool_size", None),
                 "pool_timeout": ("pool_timeout_s", _seconds), "request_timeout": ("request_timeout_s", _seconds),
                 "missing_share": ("missing_share", float)}


def apply_recommendations(settings: RunSettings, experiment) -> dict:
    """An experiment's `run:` section sets what the user left at its default (e.g. counters for
    write-behind-crashing-flusher). Returns what was applied, for run.json."""
    applied = {}
    for key, value in (getattr(experiment, "run", None) or {}).items():
        attribute, convert = RECOMMENDABLE[key]
        if attribute in settings.explicit:
            continue
        setattr(settings, attribute, convert(value) if convert else value)
        applied[attribute] = getattr(settings, attribute)
    return applied


def resolve_experiment(name_or_path: str | None):
    if not name_or_path:
        return None
    from cachestorm.chaos.experiment import load_experiment

    return load_experiment(name_or_path)


def plan_experiment(settings: RunSettings):
    """The experiment as this run will play it: loaded, its `run:` recommendations applied to `settings`,
    moved by --experiment-at and checked to fit in the load. Returns (experiment or None, applied)."""
    experiment = resolve_experiment(settings.experiment)
    applied = apply_recommendations(settings, experiment)
    if experiment is None:
        return None, applied
    if settings.experiment_at_s is not None:
        experiment = experiment.shifted(settings.experiment_at_s)
    late = [step for step in experiment.method if step.at_s >= settings.duration_s]
    if late:
        step = late[0]
        raise CachestormError(f"fault {step.fault} of {experiment.name} starts at {step.at_s:g}s, after the load ends "
                              f"({settings.duration_s:g}s): lengthen --duration or move it with --experiment-at")
    return experiment, applied


# ---------------------------------------------------------------- targets

def target_settings(settings: RunSettings, port: int, instance: str) -> TargetSettings:
    """One target's settings from the run's (the protections' knobs only when given: else the target's own)."""
    knobs = {"jitter": settings.jitter, "xfetch_beta": settings.xfetch_beta, "lock_ms": settings.lock_ms,
             "max_stale": settings.max_stale_s, "negative_ttl": settings.negative_ttl_s}
    return TargetSettings(domain=settings.domain, strategy=settings.strategy, host="127.0.0.1", port=port,
                          rows=settings.rows, ttl=settings.ttl_s or None, recompute_ms=settings.recompute_ms,
                          recompute_mode=settings.recompute_mode, db_capacity=settings.db_capacity,
                          pool_size=settings.pool_size, pool_timeout=settings.pool_timeout_s,
                          hot_keys=settings.hot_keys, instance_id=instance,
                          **{name: value for name, value in knobs.items() if value is not None})


def target_argv(settings: RunSettings, port: int, instance: str) -> list[str]:
    """Without the stack's URLs: they go by `target_url_env` (a command line is visible to every user)."""
    return [sys.executable, "-m", TARGET_MODULE, *target_settings(settings, port, instance).argv(),
            *settings.target_args]


def target_url_env(stack: StackState, instance: str | None = None) -> dict[str, str]:
    from cachestorm.targets.settings import URL_ENV

    env = {URL_ENV["redis_url"]: stack.redis_proxy_url, URL_ENV["postgres_url"]: stack.postgres_proxy_url}
    if instance is not None:  # libpq's application_name: which run's target a backend serves
        env["PGAPPNAME"] = target_app_name(instance)
    return env


def start_targets(settings: RunSettings, stack: StackState, run_dir: Path,
                  into: list[TargetProcess] | None = None) -> list[TargetProcess]:
    """Start the instances; `into`: the list to add each to before it starts (the caller stops them, even
    after an interrupt between a start and its return). Without `into`, a failure stops those started."""
    targets: list[TargetProcess] = [] if into is None else into
    logs = RunFolder(run_dir).logs_dir
    logs.mkdir(exist_ok=True)
    try:
        for index in range(settings.instances):
            name = f"target-{index + 1}"
            for attempt in range(5):  # a port taken between probe and bind: try another
                port = free_port()
                target = TargetProcess(name, port, target_argv(settings, port, name), logs / f"{name}.log",
                                       target_url_env(stack, name))
                targets.append(target)
                try:
                    target.start()
                    break
                except CachestormError:
                    target.stop()
                    targets.remove(target)
                    if attempt < 4 and "address already in use" in target.log_path.read_text(errors="replace").lower():
                        continue
                    raise
    except BaseException:
        if into is None:
            for target in targets:
                target.stop()
        raise
    return targets


# ---------------------------------------------------------------- PostgreSQL: what stopped targets leave

TARGET_APP_PREFIX = "cachestorm-target"


def target_app_name(instance: str) -> str:
    """The targets' application_name in PostgreSQL (libpq's PGAPPNAME): names the run that owns them, by
    PID and start time, so a later run can tell a stopped run's leftovers from a live run's queries."""
    return f"{TARGET_APP_PREFIX} {_owner_token()} {instance}"


def _owner_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{guardian.start_time(pid)}"


def cancel_target_queries(postgres_url: str, leftovers: bool = False) -> list[dict]:
    """Terminate the PostgreSQL backends of this process's targets (their queries, a 60 s recompute's
    pg_sleep, would keep the DB's slots after the targets stopped), or with `leftovers`, those of runs
    whose process is gone. Never the scraper's, ours, or a live run's. Returns what was terminated."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT pid, application_name, state, left(query, 80) FROM pg_stat_activity "
            "WHERE application_name LIKE %s AND pid <> pg_backend_pid()", (TARGET_APP_PREFIX + " %",)).fetchall()
        mine = f"{TARGET_APP_PREFIX} {_owner_token()} "
        chosen = []
        for pid, name, state, query in rows:
            parts = name.split(" ")
            owner = parts[1] if len(parts) > 2 else ""
            if leftovers:
                if name.startswith(mine) or _owner_alive(owner):
                    continue
            elif not name.startswith(mine):
                continue
            chosen.append({"pid": pid, "application_name": name, "state": state, "query": query})
        for backend in chosen:
            conn.execute("SELECT pg_terminate_backend(%s)", (backend["pid"],))
    return chosen


def _cancel_quietly(postgres_url: str) -> list[dict]:
    """cancel_target_queries for a clean-up: PostgreSQL gone (a lost dependency) leaves nothing to cancel."""
    import psycopg

    try:
        return cancel_target_queries(postgres_url)
    except psycopg.OperationalError:
        return []


def _owner_alive(owner: str) -> bool:
    try:
        pid, start = owner.split(":")
        return guardian.start_time(int(pid)) == int(start)
    except ValueError:
        return False


# ---------------------------------------------------------------- Locust

def locust_argv(settings: RunSettings, targets: list[TargetProcess], run_dir: Path) -> list[str]:
    folder = RunFolder(run_dir)
    folder.locust_dir.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile(settings.domain)),
            # open model: one scheduler user issues every arrival (design.md, "Locust command line")
            "--headless", "-u", "1" if settings.rate else str(settings.users),
            "-r", "1" if settings.rate else str(settings.spawn_rate),
            "-t", f"{int(round(settings.duration_s))}s", "--stop-timeout", "5", "--exit-code-on-error", "0",
            "--host", targets[0].base_url,
            "--csv", str(folder.locust_prefix), "--csv-full-history",
            "--json-file", str(folder.locust_prefix), "--only-summary",
            "--loglevel", "WARNING",
            "--run-dir", str(run_dir), *locust_traffic_args(settings)]
    if len(targets) > 1:
        argv += ["--hosts", ",".join(t.base_url for t in targets)]
    return argv + settings.locust_args


def traffic_options(settings: RunSettings) -> dict:
    """The traffic's own options (design.md, "Locust command line") from the run's settings, by name."""
    options = {"key_model": settings.key_model, "alpha": settings.alpha, "keys": settings.keys,
               "hot_keys": settings.hot_keys, "celebrity_share": settings.celebrity_share, "retry": settings.retry,
               "seed": settings.seed, "request_timeout": settings.request_timeout_s,
               "missing_share": settings.missing_share, "owner_read_share": settings.owner_read_share}
    if settings.preset:  # the preset's own operation mix wins unless a write ratio was asked for
        options["preset"] = settings.preset
    if not settings.preset or "write_ratio" in settings.explicit:
        options["write_ratio"] = settings.write_ratio
    if settings.rate is not None:
        options["rate"] = settings.rate
    if settings.shape:
        options["shape"] = settings.shape
        if settings.shape_args:
            options["shape_args"] = settings.shape_args
    return options


def locust_traffic_args(settings: RunSettings) -> list[str]:
    return traffic_argv(traffic_options(settings))


# ---------------------------------------------------------------- the run: a list of steps

def run(settings: RunSettings, on_event=None, stack: StackState | None = None) -> Path:
    """Run once and return the run folder. `on_event(name, **kw)` reports progress (optional).

    `stack`: a stack the caller owns (a matrix shares one); else `up`'s, else one for this run.
    A run that failed (a step failed, a dependency was lost) is marked and reported, then its error
    is raised; one interrupted (SIGINT, SIGTERM, SIGHUP) is marked and reported too, then
    KeyboardInterrupt is raised. Whatever it started is stopped, shielded from any further signal,
    and even if this process is SIGKILLed (the guardian).
    """
    with interrupts.armed(), guardian.guarded("run", orphans=True):
        return _run(settings, on_event, stack)


class Run:
    """One run's state, shared by its steps: what each started, and the outcome so far."""

    def __init__(self, settings: RunSettings, experiment, applied: dict, notify, stack: StackState | None):
        self.settings = settings
        self.experiment = experiment
        self.applied = applied
        self.notify = notify
        self.folder: RunFolder | None = None   # the report step's
        self.journal: Journal | None = None
        self.meta: dict = {}
        self.t0_wall = 0.0
        self.stack = stack                     # the caller's, up's, or the run's own (owned_stack)
        self.owned_stack: StackState | None = None
        self.targets: list[TargetProcess] = []
        self.counters_start: dict[str, int] = {}
        self.scraper: Scraper | None = None
        self.locust: subprocess.Popen | None = None
        self.load_start: float | None = None
        self.runner = None
        self.outcome = "failed"                # ok once the load ran to its end; interrupted; failed
        self.failure: Exception | None = None
        self.load_done = False
        self.report_error: Exception | None = None

    @property
    def run_dir(self) -> Path:
        return self.folder.path


class Step:
    """One part of a run. `start` starts what it owns and records it in the journal; `stop` stops it.
    The steps start in order (`STEPS`), then each `wait`s (the load: until it ends); their `stop`s run
    in reverse order whatever happened, shielded from signals, so a `stop` must be safe when its
    `start` never ran or stopped half-way (it stops what the run holds)."""

    name = "step"
    kind = "run"   # the journal's kind for a failure of its stop

    def start(self, run: Run) -> None:
        pass

    def wait(self, run: Run) -> None:
        pass

    def stop(self, run: Run) -> None:
        pass


class ReportStep(Step):
    """The run folder and run.json; at the end (stopped last) run.json is marked and the report rendered,
    for an interrupted or failed run too."""

    name, kind = "report", "report"

    def start(self, run: Run) -> None:
        settings = run.settings
        label = settings.label or f"{settings.domain}-{settings.strategy}" + (
            f"-{Path(settings.experiment).stem}" if settings.experiment else "")
        run.folder = RunFolder.new(Path(settings.out).resolve(), label)  # Locust runs from the repo root
        run.t0_wall = time.time()
        t0_mono = time.monotonic_ns()
        run.journal = run.folder.journal(run.t0_wall)
        run.meta.update({"cachestorm_version": __version__, "run_id": run.run_dir.name, "label": label,
                         "settings": _jsonable(settings), "started_at": run.t0_wall, "t0_monotonic_ns": t0_mono,
                         "experiment": getattr(run.experiment, "name", settings.experiment),
                         # the settings the experiment's `run:` section set (the user typed the rest: settings.explicit)
                         "recommended_settings_applied": run.applied})
        run.folder.write_meta(run.meta)
        _record_step_plan(run.folder, settings)

    def stop(self, run: Run) -> None:
        if run.folder is None:
            return
        if run.failure is not None:
            run.meta["error"] = _one_line(run.failure)
        if run.outcome == "ok" and interrupts.held():  # a signal during the clean-up: asked to stop, it is
            run.outcome = "interrupted"                # interrupted, even if nothing was left to cut short
        run.meta["ended_at"] = time.time()
        run.meta["outcome"] = run.outcome
        run.folder.write_meta(run.meta)
        if run.failure is None and run.outcome != "interrupted":
            try:
                _merge_recordings(run.run_dir, run.journal)
                if run.settings.render:
                    render_run(run.run_dir, run.journal)
            except Exception as exc:  # noqa: BLE001 - raised once everything is stopped
                run.report_error = exc
            if run.outcome == "ok" and interrupts.held():  # one came while it rendered: marked and rendered so
                run.outcome = run.meta["outcome"] = "interrupted"
                run.folder.write_meta(run.meta)
                _report_failed_run(run.run_dir, run.journal, run.settings)
        else:
            _report_failed_run(run.run_dir, run.journal, run.settings)


class StackStep(Step):
    """The caller's stack, `up`'s, or one for this run (stopped at the end); reset to cold and fault-free."""

    name, kind = "stack", "stack"

    def start(self, run: Run) -> None:
        with run.journal.step("stack", "stack") as info:
            run.stack = run.stack or _existing_stack(run.settings.stack)
            if run.stack is None:
                run.stack = run.owned_stack = start_stack(run.settings.stack)
            info.update(owned=run.owned_stack is not None, endpoints=run.stack.endpoints(),
                        pids=[s["pid"] for s in run.owned_stack.servers] if run.owned_stack else [])
        run.meta["stack"] = run.stack.endpoints()
        run.notify("stack", stack=run.stack)
        with run.journal.step("reset cache and faults", "stack"):
            _reset_between_runs(run.stack)

    def stop(self, run: Run) -> None:
        if run.owned_stack is not None:
            with run.journal.step("stop stack", "stack"):
                stop_stack(run.owned_stack)
            run.owned_stack = None


class TargetsStep(Step):
    """The target instances, on the stack's proxied URLs."""

    name, kind = "targets", "target"

    def start(self, run: Run) -> None:
        settings = run.settings
        with run.journal.step("cancel leftover queries", "stack") as info:  # an earlier run's, still holding slots
            left = cancel_target_queries(run.stack.postgres_url, leftovers=True)
            info.update(terminated=len(left), backends=left)
        if left:
            print(f"note: cancelled {len(left)} queries in PostgreSQL that an earlier run's targets left "
                  f"(e.g. {left[0]['application_name']!r}: {left[0]['query']!r})", file=sys.stderr)
        with run.journal.step("start targets", "target", strategy=settings.strategy,
                              instances=settings.instances) as info:
            start_targets(settings, run.stack, run.run_dir, into=run.targets)
            info["targets"] = {t.name: t.base_url for t in run.targets}
            info["pids"] = [t.pid for t in run.targets]
        run.meta["targets"] = {t.name: t.base_url for t in run.targets}
        run.folder.write_meta(run.meta)
        if DOMAINS[settings.domain].counter:  # a reused stack carries earlier counts: reconcile the difference
            run.counters_start = read_truth(run.stack.postgres_url, settings.domain)["counters"]
        run.notify("targets", targets=run.targets)

    def stop(self, run: Run) -> None:
        if not run.targets:
            return
        with run.journal.step("cancel target queries", "target") as info:
            # before they stop (a target waits for its requests, a 60 s recompute too) and after (what
            # they began meanwhile): their queries would keep the DB's slots for the next run
            terminated: list[dict] = []
            try:
                terminated += _cancel_quietly(run.stack.postgres_url)
            finally:  # whatever PostgreSQL answered, the targets stop
                for target in run.targets:
                    target.stop()
            terminated += _cancel_quietly(run.stack.postgres_url)
            info["terminated"] = len(terminated)
            info["backends"] = terminated[:20]


class FinaliseStep(Step):
    """Once the load ran to its end (and the load, the faults and the scraper are stopped): the final
    flush and the truth from PostgreSQL, before the targets stop."""

    name, kind = "finalise", "target"

    def stop(self, run: Run) -> None:
        if run.targets and run.load_done:
            try:
                _finalise(run.settings, run.targets, run.stack, run.run_dir, run.journal, run.counters_start)
            except Exception as exc:  # noqa: BLE001 - e.g. PostgreSQL gone at the very end
                run.outcome, run.failure = "failed", exc


class WarmStep(Step):
    """Prefill every key (--warm): the load starts on a cache in steady state."""

    name, kind = "warm", "target"

    def start(self, run: Run) -> None:
        if run.settings.warm:
            with run.journal.step("warm cache", "target", keys=run.settings.keys) as info:
                info.update(warm_cache(run.targets[0].base_url, run.settings))


class ScrapeStep(Step):
    """The targets' /metrics and PostgreSQL's counters, every second, into the run folder."""

    name, kind = "scrape", "stack"

    def start(self, run: Run) -> None:
        run.scraper = Scraper(run.run_dir, run.t0_wall, {t.name: t.base_url for t in run.targets},
                              run.stack.postgres_url).start()

    def stop(self, run: Run) -> None:
        if run.scraper is not None:
            run.scraper.stop()


class LoadStep(Step):
    """Locust, headless, for --duration; its end is the run's."""

    name, kind = "load", "load"

    def start(self, run: Run) -> None:
        run.load_start = time.time()
        # spawn(): its own session (a terminal's Ctrl-C is ours), recorded for the guardian with no
        # interrupt between its fork and its registration
        run.locust = spawn(locust_argv(run.settings, run.targets, run.run_dir), run.folder.locust_log_path,
                           cwd=str(REPO_ROOT), env=child_env())
        run.meta["load_started_at"] = run.load_start
        run.folder.write_meta(run.meta)
        run.notify("load", duration_s=run.settings.duration_s)

    def wait(self, run: Run) -> None:
        settings = run.settings
        returncode = _wait_for_locust(run.locust, settings, run.runner, DependencyWatch(run.stack), run.journal)
        run.journal.record("load", "load", run.load_start, time.time(),
                           "ok" if returncode == 0 else f"exit {returncode}",
                           {"users": settings.users, "rate": settings.rate, "returncode": returncode,
                            "pid": run.locust.pid})
        if returncode != 0:  # failed requests exit 0 (--exit-code-on-error 0): they are what we measure
            raise CachestormError(f"Locust exited with code {returncode}; see {run.folder.locust_log_path}")
        run.outcome = "ok"
        run.load_done = True

    def stop(self, run: Run) -> None:
        if run.locust is not None and run.locust.poll() is None:
            _stop_locust(run.locust)


class ExperimentStep(Step):
    """The experiment's faults on their timeline from the load's start; all reverted when it stops."""

    name, kind = "experiment", "fault"

    def start(self, run: Run) -> None:
        if run.experiment is not None:
            run.runner = _start_experiment(run.experiment, run.settings, run.stack, run.targets, run.run_dir,
                                           run.journal, run.load_start)

    def stop(self, run: Run) -> None:
        _stop_quietly(run.runner, run.journal)
        if run.outcome == "ok" and run.runner is not None and run.runner.failed_faults():
            run.outcome = "failed"  # the load ran, the experiment did not: its journal records say which fault
        elif run.outcome == "ok" and run.runner is not None and run.runner.summary()["hypothesis"] == "not_verified":
            run.outcome = "not_verified"  # a probe had no data: no data is not a pass (journal: "hypothesis")


# started in this order, stopped in reverse: faults reverted first, then Locust, the scraper, the final
# flush, the targets, the stack; last of all run.json is marked and the report rendered
STEPS: tuple[type[Step], ...] = (ReportStep, StackStep, TargetsStep, FinaliseStep, WarmStep, ScrapeStep,
                                 LoadStep, ExperimentStep)


def _run(settings: RunSettings, on_event, stack: StackState | None) -> Path:
    experiment, applied = plan_experiment(settings)
    settings.validate()
    settings.strategy = resolve_strategy(settings.strategy, settings.domain)
    _check_locust_args(settings)
    with run_lock():
        return _run_locked(settings, experiment, applied, on_event, stack)


RUN_LOCK = Path(".cachestorm") / "run.lock"
_locks_held: list[int] = []


@contextmanager
def run_lock(path: Path = RUN_LOCK):
    """One run at a time in this folder (on `up`'s stack of this folder): `acquire_run_lock` for a `with`."""
    release = acquire_run_lock(path)
    try:
        yield
    finally:
        release()


def acquire_run_lock(path: Path = RUN_LOCK):
    """An exclusive flock on .cachestorm/run.lock, released by the kernel however this process ends
    (SIGKILL too); a second run refuses with one line (exit 2). Re-entrant within a process (a matrix
    holds it, its runs too). Returns the function that releases it."""
    if _locks_held:
        return lambda: None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CachestormError(f"cannot take the run lock {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise CachestormError(f"another run is going on in this folder ({holder}); runs here share "
                              f"{path.parent}/ and its stack: wait for it to end, or stop it", exit_code=2) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}, started {time.strftime('%H:%M:%S')}".encode(), 0)
    _locks_held.append(fd)

    def release() -> None:
        if fd in _locks_held:
            _locks_held.remove(fd)
            os.close(fd)  # (closing the last descriptor releases the lock)

    return release


def _run_locked(settings: RunSettings, experiment, applied: dict, on_event, stack: StackState | None) -> Path:
    refuse_active_faults(DEFAULT_LEDGER)
    run = Run(settings, experiment, applied, on_event or (lambda *a, **k: None), stack)
    started: list[Step] = []
    try:
        try:
            for step_class in STEPS:
                step = step_class()
                started.append(step)  # its stop runs even if its start stops half-way
                step.start(run)
            for step in started:
                step.wait(run)
        except KeyboardInterrupt:
            run.outcome = "interrupted"
        except Exception as exc:  # noqa: BLE001 - marked, reported, then raised again below
            run.failure = exc
    except KeyboardInterrupt:  # the first signal landed in an except clause above (the next ones are held)
        run.outcome = "interrupted"
    _unwind(run, started)
    if run.folder is None:  # stopped before its folder existed: nothing was started
        if run.failure is not None:
            raise run.failure
        raise KeyboardInterrupt
    if interrupts.interrupted():  # a signal cut a step short, or came during the clean-up: stop here
        interrupts.note(f"the run is marked {run.outcome} and reported: {run.run_dir}")
        raise KeyboardInterrupt
    failure = run.failure
    if failure is None:
        if run.report_error is not None:
            raise run.report_error
        return run.run_dir
    if isinstance(failure, CachestormError):
        raise CachestormError(f"{failure} — the run is marked failed: {run.run_dir}", exit_code=1) from failure
    raise failure


def _unwind(run: Run, started: list[Step]) -> None:
    """Each started step's stop, last first, shielded from signals (held: `interrupts.held()`); a stop
    that fails is recorded in the journal and the others still run."""
    while True:
        try:
            with interrupts.shielded():
                while started:
                    step = started.pop()
                    try:
                        step.stop(run)
                    except Exception as exc:  # noqa: BLE001 - keep stopping the rest; the journal says what failed
                        if run.journal is not None:
                            now = time.time()
                            run.journal.record(f"stop {step.name}", step.kind, now, now, "failed",
                                               {"error": _one_line(exc)})
            return
        except KeyboardInterrupt:  # the run's first signal landed just before the shield: it cut nothing short
            continue


def _record_step_plan(folder: RunFolder, settings: RunSettings) -> None:
    """A step load records what it offers, so a capacity report reads it instead of rebuilding it."""
    if settings.rate and settings.shape == "step":
        from cachestorm.traffic.models.shapes import build_shape

        step = build_shape(settings.shape, settings.shape_args)
        folder.write_step_plan(settings.rate, step.levels(), step.hold)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _report_failed_run(run_dir: Path, journal: Journal, settings: RunSettings) -> None:
    """A failed run is still reported (marked failed); a report that cannot be made must not hide why
    the run failed, so its own error only goes to the journal."""
    start = time.time()
    try:
        _merge_recordings(run_dir, journal)
        if settings.render:
            render_run(run_dir, journal)
    except Exception as exc:  # noqa: BLE001
        journal.record("report of a failed run", "report", start, time.time(), "failed", {"error": _one_line(exc)})


def warm_cache(base_url: str, settings: RunSettings) -> dict:
    """Prefill keys 1..N as a cache in steady state holds them: the target streams the rows in id
    ranges, PostgreSQL building each range's SETs (targets/prefill.py), with expiries spread over
    their TTL, so the warm-up costs seconds whatever --recompute is, and no wave of expiries
    follows it (unless a fault asks)."""
    try:  # 1 M keys took 68 s on 2 cores at load 18: allow 100 µs per key beyond two minutes
        response = httpx.post(f"{base_url}/prefill", json={"keys": settings.keys, "seed": settings.seed},
                              timeout=120 + settings.keys * 100e-6)
    except httpx.HTTPError as exc:
        raise CachestormError(f"warm-up failed: {exc.__class__.__name__} {exc}") from exc
    if response.status_code != 200:
        raise CachestormError(f"warm-up failed: target answered {response.status_code} {response.text[:200]}")
    return response.json()


def _existing_stack(settings: StackSettings) -> StackState | None:
    """Use the stack of `cachestorm up` when it is healthy and no URL was given."""
    if settings.redis_url or settings.postgres_url or settings.toxiproxy_url:
        return None
    state = load_state()
    if state is None:
        return None
    if not all(ok for ok, _ in health(state).values()):
        raise CachestormError("the stack from `cachestorm up` is not healthy (see `cachestorm status`); "
                              "run `cachestorm down` and try again")
    return state


def _reset_between_runs(stack: StackState) -> None:
    """Every run starts cold and fault-free: flush Redis, reset proxy toxics, reset pg counters."""
    import psycopg
    import redis

    from cachestorm.chaos.toxiproxy import ToxiproxyClient

    redis.Redis.from_url(stack.redis_url, socket_timeout=5).flushall()
    ToxiproxyClient(stack.proxy_api_url).reset()
    with psycopg.connect(stack.postgres_url, autocommit=True) as conn:
        try:
            conn.execute("SELECT pg_stat_statements_reset()")
        except psycopg.Error:
            pass


def _start_experiment(experiment, settings, stack, targets, run_dir, journal, load_start):
    from cachestorm.chaos.context import ChaosContext, TargetHandle
    from cachestorm.chaos.runner import ExperimentRunner

    context = ChaosContext(
        redis_url=stack.redis_url, postgres_url=stack.postgres_url, proxy_api_url=stack.proxy_api_url,
        domain=settings.domain, hot_keys=settings.hot_keys, key_space=settings.keys,
        targets=[_handle(TargetHandle, t) for t in targets],
        restart_redis=(lambda: _restart_redis(stack)) if any(s["kind"] == "redis" for s in stack.servers) else None,
        run_dir=str(run_dir), ledger_path=str(DEFAULT_LEDGER),
    )
    runner = ExperimentRunner(experiment, context, journal)
    warning = unguarded_warning(stack.proxy_api_url, [step.build() for step in experiment.method])
    if warning:  # each fault's journal record says it too ("self_expiry")
        print(warning, file=sys.stderr)
    runner.start()
    return runner


def _restart_redis(stack: StackState) -> None:
    """A redis-restart fault. The stack of `cachestorm up` outlives the run: its new Redis is not the
    run's to clean up, and its state file must name the new PID for `cachestorm down`."""
    up_state = load_state()
    if up_state is not None and up_state.base_dir == stack.base_dir:
        with guardian.untracked():
            restart_redis(stack)
        save_state(stack)
    else:
        restart_redis(stack)


def _handle(handle_class, target: TargetProcess):
    """A chaos handle whose PID follows the target across restarts (a second kill must hit the new one)."""
    handle = handle_class(target.name, target.pid, target.base_url)

    def restart() -> None:
        target.restart()
        handle.pid = target.pid

    handle.restart = restart
    return handle


def _wait_for_locust(locust: subprocess.Popen, settings: RunSettings, runner, watch: DependencyWatch,
                     journal: Journal) -> int:
    deadline = time.monotonic() + settings.duration_s + 60  # Locust stops itself; this is the backstop
    while True:
        try:
            return locust.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        interrupts.check()  # an interrupt whose KeyboardInterrupt was swallowed (a `__del__`) still ends the load
        try:
            watch.check()
        except CachestormError as exc:
            now = time.time()
            journal.record("dependency lost", "stack", now, now, "failed", {"error": str(exc)})
            _stop_locust(locust)
            raise
        if runner is not None and runner.abort_event.is_set():
            _stop_locust(locust)
            return locust.wait()
        if time.monotonic() > deadline:
            _stop_locust(locust)
            raise CachestormError("Locust did not stop by itself within 60 s of the run's end; stopped it")


def _stop_locust(locust: subprocess.Popen) -> None:
    """SIGINT lets Locust write its final stats; then force."""
    for sig, wait_s in ((signal.SIGINT, 15), (signal.SIGKILL, 5)):
        if locust.poll() is not None:
            return
        try:
            os.killpg(locust.pid, sig)
        except ProcessLookupError:
            return
        try:
            locust.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue


def _stop_quietly(runner, journal: Journal) -> None:
    if runner is None:
        return
    start = time.time()
    try:
        runner.stop()
    except Exception as exc:  # noqa: BLE001 - keep stopping the rest; the journal says what failed
        journal.record("revert faults", "fault", start, time.time(), "failed", {"error": str(exc)})


def _finalise(settings: RunSettings, targets, stack: StackState, run_dir: Path, journal: Journal,
              counters_start: dict[str, int]) -> None:
    """Final flush (write-behind) and the truth from PostgreSQL, for the consistency checker."""
    with journal.step("final flush", "target") as info:
        flushed = {}
        for target in targets:
            try:
                response = httpx.post(f"{target.base_url}/counters/flush", timeout=30)
                if response.status_code == 200:
                    flushed[target.name] = response.json()
            except httpx.HTTPError as exc:
                flushed[target.name] = {"error": str(exc)}
        info["flushed"] = flushed
    with journal.step("truth from postgres", "target"):
        truth = read_truth(stack.postgres_url, settings.domain, run_dir)  # the rows the histories name
        promises = _declared_promises(targets[0])
        truth["declared_staleness_bound_s"] = promises.get("staleness_bound_s")
        truth["declared_revoke_bound_s"] = promises.get("revoke_bound_s")  # permissions: the domain's own
        truth["counters_start"] = counters_start
        RunFolder(run_dir).write_truth(truth)


def read_truth(postgres_url: str, domain: str, run_dir: Path | None = None) -> dict:
    """PostgreSQL's state for the consistency checker, read in bounded batches. With a run folder:
    the rows its histories name (the checker looks up only those: lost writes by the keys of acked
    writes, counters by the keys the history saw) and the first row, so truth.json grows with the
    run, not with the key space. Without one (a counter domain's state before the load): only rows earlier runs
    changed, since the checker takes a missing start count as 0."""
    import psycopg

    spec = domain_spec(domain)
    versions: dict[str, int] = {}
    counters: dict[str, int] = {}
    if run_dir is not None:
        ids = sorted(_history_ids(run_dir))
        batches = [("WHERE id = ANY(%s)", (ids[at:at + TRUTH_BATCH],)) for at in range(0, len(ids), TRUTH_BATCH)]
        # and the first row: with no history the checker still finds a truth, as when every row was kept
        batches.append(("WHERE id = (SELECT min(id) FROM " + spec.table + ")", ()))
    else:
        changed = " OR COALESCE((data->>'count')::bigint, 0) <> 0" if spec.counter else ""
        batches = [(f"WHERE version <> 1{changed}", ())]
    try:
        with psycopg.connect(postgres_url, connect_timeout=5) as conn:
            for where, params in batches:
                with conn.cursor(name="cachestorm_truth") as cur:  # server-side: rows arrive in batches
                    cur.itersize = TRUTH_BATCH
                    cur.execute(f"{spec.truth_sql} {where}", params)
                    for row in cur:
                        if spec.per_field:  # e.g. one row per user; histories name each permission user:perm
                            for item in row[2] or {}:
                                versions[f"{domain}:{row[0]}:{item}"] = row[1]
                        else:
                            versions[f"{domain}:{row[0]}"] = row[1]
                        if spec.counter:
                            counters[str(row[0])] = row[2]
    except psycopg.Error as exc:  # recorded: the checker then says what it could not reconcile
        return {"domain": domain, "versions": {}, "counters": {}, "error": str(exc).splitlines()[0]}
    return {"domain": domain, "versions": versions, "counters": counters}


TRUTH_BATCH = 50_000


def _history_ids(run_dir: Path) -> set[int]:
    """The row ids the run's histories name (`<domain>:<id>`, `<domain>:<id>:<item>` or `<id>`),
    read a line at a time."""
    from cachestorm.reports.history import MAGIC

    ids: set[int] = set()
    for path in RunFolder(run_dir).history_files():
        with path.open("r", encoding="utf-8", newline="\n") as handle:
            if handle.readline().rstrip("\r\n") != MAGIC:
                continue  # not a history: the checker says so when it reads it
            header = handle.readline().rstrip("\r\n").split("\t")
            if "key" not in header:
                continue
            column = header.index("key")
            for line in handle:
                fields = line.split("\t", column + 1)
                if len(fields) > column:
                    for part in fields[column].rstrip("\r\n").split(":"):
                        if part.isdigit():
                            ids.add(int(part))
                            break
    return ids


def _declared_promises(target: TargetProcess) -> dict:
    """The strategy's and the domain's own promises (staleness_bound_s, revoke_bound_s), as the target states them."""
    try:
        info = httpx.get(f"{target.base_url}/healthz", timeout=5).json()
        if isinstance(info, dict):
            return {k: info[k] for k in ("staleness_bound_s", "revoke_bound_s") if info.get(k) is not None}
    except (httpx.HTTPError, ValueError):
        pass
    return {}


def _merge_recordings(run_dir: Path, journal: Journal) -> None:
    with journal.step("merge latency and histories", "report"):
        merge_run(run_dir)


def render_run(run_dir: Path, journal: Journal | None = None) -> list[Path]:
    if journal is None:
        return reports.render_run(run_dir)
    with journal.step("render report", "report"):
        return reports.render_run(run_dir)


def _check_locust_args(settings: RunSettings) -> None:
    if not locustfile(settings.domain).exists():
        raise CachestormError(f"no locustfile for domain {settings.domain!r} in {locustfile(settings.domain).parent}")
    if shutil.which(sys.executable) is None:
        raise CachestormError("cannot find the Python interpreter to run Locust")


def _jsonable(settings: RunSettings) -> dict:
    data = asdict(settings)
    data["explicit"] = sorted(settings.explicit)  # which settings the user typed (not a frozenset's repr)
    return json.loads(json.dumps(data, default=str))
