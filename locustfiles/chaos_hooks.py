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

    def stop_the_load():
        log.error("chaos: the steady-state hypothesis of %s deviated; every fault is rolled back, stopping "
                  "the test", experiment.name)
        runner = environment.runner
        gevent.spawn(runner.quit if options.headless else runner.stop)

    return ExperimentRunner(experiment, ctx, journal, on_abort=stop_the_load)


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
        load_experiment(options.experiment)
        if options.experiment_at:
            parse_duration(options.experiment_at, "--experiment-at")
    except CachestormError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.stderr.flush()
        os._exit(2)  # a clean exit from inside Locust's startup (as the locustfiles' own checks do)


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
    runner.start()
    log.info("chaos: experiment %s started (%d faults)", runner.experiment.name, len(runner.experiment.method))


def _stop_current() -> None:
    runner, _current["runner"] = _current["runner"], None
    if runner is None:
        return
    runner.stop()
    summary = runner.summary()
    log.info("chaos: experiment %s rolled back; hypothesis %s%s", summary["experiment"], summary["hypothesis"],
             " (aborted)" if summary["aborted"] else "")


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs):
    _stop_current()


@events.quitting.add_listener
def _on_quitting(environment, **_kwargs):
    _stop_current()
