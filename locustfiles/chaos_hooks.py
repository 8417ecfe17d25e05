"""Chaos experiments inside Locust: `import chaos.locust_hooks  # noqa: F401` in a locustfile.

Adds `--experiment NAME|FILE` (plus `--experiment-at`, `--proxy-api-url`, `--redis-admin-url`,
`--postgres-admin-url`, `--run-dir`, `--chaos-domain`, `--chaos-ledger`, `--allow-remote-chaos`).
The experiment runs once per test, on the master or local runner (never on workers), starts
with the test and is rolled back when the test stops or Locust quits; so it works headless, with
the web UI and distributed. When the hypothesis deviates with `deviation: abort`, the test is
stopped (headless: Locust quits).

This is the only chaos module that imports locust.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import gevent
from cachestorm.chaos.context import DEFAULT_CHAOS_RUNS, DEFAULT_LEDGER
from locust import events
from locust.runners import WorkerRunner

from cachestorm.core.defaults import DEFAULTS
from cachestorm.core.domains import DOMAINS
from cachestorm.core.errors import CachestormError

log = logging.getLogger("cachestorm.chaos")
_current = {"runner": None}


@events.init_command_line_parser.add_listener
def _add_arguments(parser):
    options = [
        ("--experiment", "", "Chaos experiment to run with the test: a ready name (see `cachestorm chaos list`) "
                             "or a YAML file"),
        ("--experiment-at", "", "Move the experiment's timeline so its first fault starts at this second"),
        ("--proxy-api-url", "", "Chaos proxy / Toxiproxy API (default: from `cachestorm up`)"),
        ("--redis-admin-url", "", "Redis, direct, for admin commands (default: from `cachestorm up`)"),
        ("--postgres-admin-url", "", "PostgreSQL, direct (default: from `cachestorm up`)"),
        ("--run-dir", "", "Run folder: probes read its metrics/latency files; the journal goes there"),
        ("--chaos-domain", "", "Domain whose Redis keys faults touch, or a key prefix of your own "
                               "(default: the locustfile's domain)"),
        ("--chaos-ledger", str(DEFAULT_LEDGER), "Ledger of applied faults (for `chaos heal`)"),
    ]
    for flag, default, help_text in options:
        if not parser._option_string_actions.get(flag):  # locustfiles register --run-dir too
            parser.add_argument(flag, type=str, default=default, help=help_text, include_in_web_ui=True)
    if not parser._option_string_actions.get("--allow-remote-chaos"):
        parser.add_argument("--allow-remote-chaos", action="store_true", default=False,
                            help="Allow faults on non-loopback addresses")


def build_runner(environment):
    """The experiment runner for this test, from Locust's options (and `cachestorm up`'s state)."""
    from cachestorm.chaos.context import ChaosContext, TargetHandle
    from cachestorm.chaos.experiment import load_experiment
    from cachestorm.chaos.runner import ExperimentRunner

    from cachestorm.core.durations import parse_duration
    from cachestorm.core.runfolder import RunFolder
    from cachestorm.stack import load_state

    options = environment.parsed_options
    experiment = load_experiment(options.experiment)
    if options.experiment_at:
        experiment = experiment.shifted(parse_duration(options.experiment_at, "--experiment-at"))
    state = load_state()
    ctx = ChaosContext(
        redis_url=options.redis_admin_url or (state.redis_url if state else ""),
        postgres_url=options.postgres_admin_url or (state.postgres_url if state else ""),
        proxy_api_url=options.proxy_api_url or (state.proxy_api_url if state else ""),
        ledger_path=options.chaos_ledger, allow_remote=bool(options.allow_remote_chaos),
        hot_keys=int(getattr(options, "hot_keys", None) or DEFAULTS.hot_keys),
        key_space=int(getattr(options, "keys", None) or DEFAULTS.keys),
    )
    locustfile = Path(str(getattr(options, "locustfile", "") or "")).stem
    ctx.domain = options.chaos_domain or (locustfile if locustfile in DOMAINS else ctx.domain)
    if environment.host:
        ctx.targets = [TargetHandle("host", None, environment.host)]
    folder = (RunFolder(options.run_dir) if options.run_dir
              else RunFolder.new(DEFAULT_CHAOS_RUNS, f"locust-{experiment.name}"))
    ctx.run_dir = str(folder.path)
    journal = folder.journal(t0_wall=folder.started_at())
    hosts = [h.strip() for h in (getattr(options, "hosts", "") or "").split(",") if h.strip()]
    hosts = hosts or ([environment.host] if environment.host else [])
    sampler = None
    if hosts and not folder.metrics_path.exists():
        # no cachestorm scraper writes this folder's metrics.jsonl: the counter probes (error_rate,
        # hit_ratio, ...) would have no data, so sample the targets' /metrics here
        from cachestorm.chaos.probes import TargetSampler

        sampler = TargetSampler(folder.path, journal.t0_wall, {f"host{n}": h for n, h in enumerate(hosts)})
        log.info("chaos: sampling %s /metrics once a second into %s", ", ".join(hosts), folder.metrics_path)

    def stop_the_load():
        log.error("chaos: the steady-state hypothesis of %s deviated; every fault is rolled back, stopping "
                  "the test", experiment.name)
        runner = environment.runner
        gevent.spawn(runner.quit if options.headless else runner.stop)

    runner = ExperimentRunner(experiment, ctx, journal, on_abort=stop_the_load)
    runner.sampler = sampler.start() if sampler is not None else None
    return runner


# the part of an experiment's `run:` section that is the load's (Locust's options; the rest are the
# target's or the stack's settings): run field -> (Locust option attribute, its flags, conversion)
LOCUST_RUN_FIELDS = {
    "duration": ("run_time", ("-t", "--run-time"), "seconds"), "users": ("num_users", ("-u", "--users"), None),
    "rate": ("rate", ("--rate",), float), "keys": ("keys", ("--keys",), None),
    "key_model": ("key_model", ("--key-model",), None), "alpha": ("alpha", ("--alpha",), float),
    "celebrity_share": ("celebrity_share", ("--celebrity-share",), float),
    "write_ratio": ("write_ratio", ("--write-ratio",), float), "retry": ("retry", ("--retry",), None),
    "request_timeout": ("request_timeout", ("--request-timeout",), "seconds_float"),
    "missing_share": ("missing_share", ("--missing-share",), float),
}


def typed(flags: tuple[str, ...], argv: list[str]) -> bool:
    """Whether the command line gave one of these flags (`-t 30s`, `-t30s`, `--run-time=30s`), or the
    environment (LOCUST_RUN_TIME ...) did: what the user typed wins over an experiment's `run:`."""
    for arg in argv:
        for flag in flags:
            if arg == flag or arg.startswith(flag + "=") or (len(flag) == 2 and arg.startswith(flag) and arg != flag
                                                              and not arg.startswith("--")):
                return True
    return any(os.environ.get("LOCUST_" + flag.lstrip("-").replace("-", "_").upper())
               for flag in flags if flag.startswith("--"))


def apply_run_defaults(options, experiment, argv: list[str]) -> tuple[dict, dict, dict]:
    """Set the Locust options an experiment's `run:` recommends that the user did not type, as
    `cachestorm run` does. Returns (applied, kept as typed, not applied: the target's settings)."""
    from cachestorm.core.durations import parse_duration

    applied, kept, elsewhere = {}, {}, {}
    for key, value in (experiment.run or {}).items():
        if key not in LOCUST_RUN_FIELDS:
            elsewhere[key] = value
            continue
        attribute, flags, convert = LOCUST_RUN_FIELDS[key]
        if typed(flags, argv):
            kept[key] = getattr(options, attribute, None)
            continue
        if convert == "seconds":
            converted = max(1, round(parse_duration(str(value), f"run.{key}")))
        elif convert == "seconds_float":
            converted = parse_duration(str(value), f"run.{key}")
        else:
            converted = convert(value) if convert else value
        setattr(options, attribute, converted)
        applied[key] = value
    return applied, kept, elsewhere


@events.init.add_listener
def _validate(environment, **_kwargs):
    """A bad --experiment / --experiment-at fails at startup, in one line, before any load is sent."""
    # Locust sets its -t timer from the event loop's cached clock, stale by however long startup has
    # blocked the loop (seconds on a loaded machine): `-t 4s` then ended after 0.3 s, before a fault
    gevent.get_hub().loop.update_now()
    options = environment.parsed_options
    if options is None or isinstance(environment.runner, WorkerRunner) or not getattr(options, "experiment", ""):
        return
    from cachestorm.chaos.experiment import load_experiment

    from cachestorm.core.durations import parse_duration

    try:
        experiment = load_experiment(options.experiment)
        if options.experiment_at:
            parse_duration(options.experiment_at, "--experiment-at")
        applied, kept, elsewhere = apply_run_defaults(options, experiment, sys.argv[1:])
    except CachestormError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.stderr.flush()
        os._exit(2)  # a clean exit from inside Locust's startup (as the locustfiles' own checks do)
    shown = lambda d: ", ".join(f"{k}={v}" for k, v in d.items()) or "none"  # noqa: E731
    log.info("chaos: %s's run: defaults applied: %s; kept as typed: %s; not applied (the target's or the "
             "stack's settings: start the target with them): %s", experiment.name, shown(applied), shown(kept),
             shown(elsewhere))
    if not options.run_dir:
        # a run folder from the start, so the locustfile records its latency there and the p99 probes read it
        from cachestorm.core.runfolder import RunFolder

        folder = RunFolder.new(DEFAULT_CHAOS_RUNS, f"locust-{experiment.name}")
        folder.write_meta({"label": folder.path.name, "experiment": experiment.name, "started_at": time.time(),
                           "source": "locust --experiment"})
        options.run_dir = str(folder.path)
        log.info("chaos: run folder %s (probes read its latency and metrics)", folder.path)


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs):
    if isinstance(environment.runner, WorkerRunner) or not getattr(environment.parsed_options, "experiment", ""):
        return
    _stop_current()  # the web UI can start a new test after a stop
    try:
        runner = build_runner(environment)
    except CachestormError as exc:
        log.error("chaos: %s", exc)
        environment.process_exit_code = 2
        gevent.spawn(environment.runner.quit)
        return
    _current["runner"] = runner
    _current["environment"] = environment
    runner.start()
    log.info("chaos: experiment %s started (%d faults)", runner.experiment.name, len(runner.experiment.method))


def _stop_current() -> None:
    runner, _current["runner"] = _current["runner"], None
    if runner is None:
        return
    runner.stop()
    if getattr(runner, "sampler", None) is not None:
        runner.sampler.stop()
    summary = runner.summary()
    log.info("chaos: experiment %s rolled back; hypothesis %s%s", summary["experiment"], summary["hypothesis"],
             " (aborted)" if summary["aborted"] else "")
    environment = _current.get("environment")
    # a fault refused, reverted badly, never applied or that touched nothing tested nothing
    problems = [f"{r['what']} failed: {r['details'].get('error') or r['outcome']}" for r in runner.failed_faults()]
    if summary["hypothesis"] == "not_verified":  # no data is not a pass
        problems.append(f"the steady-state hypothesis was not verified: no data for probe "
                        f"{', '.join(summary['unknown_probes'])}")
    for problem in problems:
        log.error("chaos: %s", problem)
    if problems and environment is not None:
        environment.process_exit_code = 1


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs):
    _stop_current()


@events.quitting.add_listener
def _on_quitting(environment, **_kwargs):
    _stop_current()
