"""Shared Locust code for every domain's locustfile: options, per-process recording, the user base
class (closed and open model, retries, histories, HDR latency), the load shape, run-folder merge.

Imported only by locustfiles (it imports locust).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import cachestorm.traffic.chaos_hooks  # noqa: F401  (--experiment: chaos runs with the test, on the master)
import gevent
import gevent.pool
from cachestorm.traffic.models.arrivals import Gaps
from cachestorm.traffic.models.keys import write_key
from cachestorm.traffic.models.retry import retryable
from cachestorm.traffic.recording import HistorySampler, HistoryWriter, LatencyRecorder, merge_run, summarize
from cachestorm.traffic.settings import ARGUMENTS, Settings, build_settings
from locust import LoadTestShape, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.runners import MasterRunner, WorkerRunner

from cachestorm.core.errors import CachestormError
from cachestorm.core.runfolder import RunFolder

log = logging.getLogger("cachestorm")
PADDING = "x" * 100_000  # value bodies are slices of this: no per-request allocation of random data
WRITE_OPS = frozenset({"write", "delete", "incr", "grant", "revoke"})
ATTEMPT_FAILURES = {"timeout": "timeouts", "conn_error": "conn_errors"}  # else 5xx: "server_errors"


@events.init_command_line_parser.add_listener
def _add_arguments(parser):
    for flag, kind, default, help_text in ARGUMENTS:
        if parser._option_string_actions.get(flag):  # two locustfiles in one run register once
            continue
        parser.add_argument(flag, type=kind, default=default, help=help_text, include_in_web_ui=True)


class Process:
    """Per-process state: settings, models and recorders, shared by all users of this process."""

    domain = ""
    settings: Settings | None = None
    worker = ""
    history: HistoryWriter | None = None
    latency: LatencyRecorder | None = None
    sampler: HistorySampler | None = None
    sequence = 0
    test_start_mono = 0.0
    flusher = None
    expected_workers = 0
    host_turn = 0
    pool: gevent.pool.Pool | None = None  # open model: all in-flight arrivals of this process


def fail(message: str, environment=None):
    """Bad settings: one line and exit 2, except from the web UI's START, where they stop the test
    (the error is logged for the UI) and Locust stays up for corrected ones."""
    if environment is not None and environment.web_ui is not None and environment.runner is not None:
        log.error("cannot start: %s", message)
        return
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(2)  # a clean exit from inside gevent/locust startup; the message is one line


@events.init.add_listener
def _validate(environment, **_kwargs):
    if not Process.domain or environment.parsed_options is None:
        return
    try:
        build_settings(environment.parsed_options, Process.domain)
    except CachestormError as exc:
        fail(str(exc))
    settings = build_settings(environment.parsed_options, Process.domain)
    # a class attribute read when each user's client is created
    CachestormUser.network_timeout = CachestormUser.connection_timeout = settings.request_timeout
    if settings.open_model:
        CachestormUser.concurrency = min(settings.max_inflight, 1000)
    options = environment.parsed_options
    if settings.open_model and not isinstance(environment.runner, WorkerRunner):
        options.open_users = settings.open_users  # sent to workers with the spawn message


def worker_name(environment) -> str:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        return f"w{max(runner.worker_index, 0)}-{os.getpid()}"
    return f"local-{os.getpid()}"


@events.test_start.add_listener
def _test_start(environment, **_kwargs):
    if not Process.domain or isinstance(environment.runner, MasterRunner):
        if isinstance(environment.runner, MasterRunner):
            Process.expected_workers = environment.runner.worker_count
        return
    salt = max(getattr(environment.runner, "worker_index", 0), 0)
    try:
        settings = build_settings(environment.parsed_options, Process.domain, salt=salt)
    except CachestormError as exc:
        fail(str(exc), environment)
        return  # web UI: no settings, the users idle and the shape stops the test
    Process.settings = settings
    Process.worker = worker_name(environment)
    Process.sampler = HistorySampler(settings.hot_keys, settings.history_sample)
    Process.test_start_mono = time.monotonic()
    run_dir = settings.run_dir
    if run_dir:
        Process.history = HistoryWriter(Path(run_dir), Process.worker)
        Process.latency = LatencyRecorder(Path(run_dir), Process.worker, RunFolder(run_dir).started_at())
    else:
        Process.history = None
        Process.latency = _MemoryLatency(Process.worker)
    Process.pool = gevent.pool.Pool(settings.max_inflight)
    Process.flusher = gevent.spawn(_flush_every_second)


class _MemoryLatency(LatencyRecorder):
    """Without --run-dir: the same per-second HDR bookkeeping, written nowhere (summary only)."""

    def __init__(self, worker):  # noqa: D401 - no file
        self.file = open(os.devnull, "w")  # noqa: SIM115
        self._init(worker, None)


def _flush_every_second():
    while True:
        gevent.sleep(1.0)
        if Process.latency is not None:
            second = int(time.time())
            if Process.latency.second is not None and second != Process.latency.second:
                Process.latency.roll(second)
        if Process.history is not None:
            Process.history.flush()


@events.test_stop.add_listener
def _test_stop(environment, **_kwargs):
    if isinstance(environment.runner, MasterRunner) or Process.settings is None:
        return
    if Process.flusher is not None:
        Process.flusher.kill(block=False)
        Process.flusher = None
    if Process.pool is not None:  # open model: let in-flight arrivals finish briefly, then cut them off
        Process.pool.join(timeout=2.0)
        Process.pool.kill(block=True, timeout=2.0)
    latency, Process.latency = Process.latency, None
    if latency is not None:
        latency.close()
        summary = {kind: summarize(h) for kind, h in latency.totals.items()}
        summary["counts"] = latency.total_counts
        sys.stderr.write(f"cachestorm {Process.worker} latency (µs, HDR): {json.dumps(summary)}\n")
    history, Process.history = Process.history, None
    if history is not None:
        history.close()
    run_dir = Process.settings.run_dir
    if run_dir:
        RunFolder(run_dir).latency_done_path(Process.worker).write_text("done\n")
        if not isinstance(environment.runner, WorkerRunner):
            merge_run(run_dir)
    Process.settings = None


EXIT_LOCUSTFILE_RAISED = 3  # distinct from failed requests (--exit-code-on-error): a broken test, not a result


@events.quitting.add_listener
def _exit_code(environment, **_kwargs):
    """Our code raising in users (a setting Locust took but we cannot run, a bug) fails the process even
    when failed requests do not (`cachestorm run` passes --exit-code-on-error 0: they are the measurement)."""
    runner = environment.runner
    if runner is not None and runner.exceptions and environment.process_exit_code is None:
        environment.process_exit_code = EXIT_LOCUSTFILE_RAISED


@events.quitting.add_listener
def _merge_on_master(environment, **_kwargs):
    """The master merges after every worker has written its ``.done`` marker (bounded wait)."""
    if not isinstance(environment.runner, MasterRunner):
        return
    run_dir = getattr(environment.parsed_options, "run_dir", "")
    if not run_dir:
        return
    folder = RunFolder(run_dir)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and folder.latency_done_count() < max(Process.expected_workers, 1):
        gevent.sleep(0.1)
    result = merge_run(run_dir)
    sys.stderr.write(f"cachestorm merged latency (µs, HDR, all workers): {json.dumps(result)}\n")


class CachestormUser(FastHttpUser):
    """Base user: one ``operation()`` per task run in the closed model; in the open model each user is a
    scheduler issuing arrivals at intended times. Subclasses implement ``perform(op, key, intended_ns)``."""

    abstract = True
    network_timeout = 10.0
    connection_timeout = 10.0

    def wait_time(self):
        settings = Process.settings
        if settings is None or settings.open_model:
            return 0
        low, high = settings.think_time
        return low if low == high else random.uniform(low, high)

    @task
    def step(self):
        settings = Process.settings
        if settings is None:
            gevent.sleep(0.1)
            return
        if settings.open_model:
            self.run_open_model(settings)
        else:
            self.operation(settings, None)

    # --- one logical operation -------------------------------------------------------------
    def operation(self, settings: Settings, intended_ns: int | None):
        op = settings.mix()
        if op == "write" or op == "delete":
            key = write_key(settings.key_model)
        else:
            key = settings.key_model()
        if op == "scan":
            for offset in range(random.randint(1, 10)):
                self.perform("read", key + offset, intended_ns)
        elif op == "rmw":
            self.perform("read", key, intended_ns)
            self.perform("write", key, None)
        else:
            self.perform(op, key, intended_ns)

    def perform(self, op: str, key: int, intended_ns: int | None):  # pragma: no cover - per domain
        raise NotImplementedError

    def value_body(self) -> str:
        return PADDING[: Process.settings.value_size()]

    def call(self, op: str, key: int, method: str, path: str, name: str, intended_ns: int | None,
             body=None, headers: dict | None = None, user: str = "", value: str = "", read_granted=False,
             history_key: str | None = None):
        """One logical request with the retry policy. Records one history line per attempt (sampled
        keys) and one HDR value: from the intended send time (open model) or the first attempt's start
        to the last attempt's end. `history_key` names the cached item when the key id alone does
        not (a user's permission). Returns (status, version, json body or None)."""
        settings = Process.settings
        if settings is None or Process.latency is None:  # the test has stopped under this greenlet
            raise gevent.GreenletExit
        Process.sequence += 1
        request_id = f"{Process.worker}-{Process.sequence}"
        is_write = op in WRITE_OPS
        if is_write:  # writes carry it (idempotent increments); reads keep it only in the history
            if headers:
                headers["X-Request-Id"] = request_id  # callers pass a fresh dict
            else:
                headers = {"X-Request-Id": request_id}
        retry = settings.retry
        retry.on_request()
        record_history = Process.history is not None and Process.sampler(key)
        latency = Process.latency
        attempt = 0
        first_start_ns = None
        while True:
            attempt += 1
            start_ns = time.monotonic_ns()
            start_wall = time.time()
            # by the second they were sent: the load clients offer per logical request (retries included)
            latency.count("attempts_started", 1, start_wall)
            if first_start_ns is None:
                latency.count("requests_started", 1, start_wall)
                first_start_ns = start_ns
                if intended_ns is not None:
                    lag = start_ns - intended_ns
                    latency.record("send_lag", lag / 1000.0, start_wall)
                    latency.count("sent", 1, start_wall)
                    if lag > settings.late_ns:
                        latency.count("late", 1, start_wall)
            status, version, source, data = self._send(method, path, name, body, headers, read_granted)
            end_ns = time.monotonic_ns()
            if record_history and Process.history is not None:
                if read_granted and data is not None:
                    value = "1" if data.get("granted") else "0"
                Process.history.record(history_key or key, op, start_ns, end_ns, start_wall, status, version,
                                       "" if is_write else source, user, request_id, value, attempt)
            failed = retryable(status)
            if failed:  # every failed attempt counted by kind, sampled key or not (the headline's window counts)
                latency.count(ATTEMPT_FAILURES.get(status, "server_errors"), 1, start_wall)
            pause = retry.delay(attempt, failed)
            if pause is None:
                break
            if pause > 0:
                gevent.sleep(pause)
        if Process.latency is None:
            return status, version, data
        now_wall = time.time()
        begin = intended_ns if intended_ns is not None else first_start_ns
        latency.request_done("write" if is_write else "read", (end_ns - begin) / 1000.0, attempt, now_wall)
        return status, version, data

    def _send(self, method, path, name, body, headers, want_json):
        hosts = Process.settings.hosts
        if hosts:  # several target instances: spread requests round-robin, like a load balancer
            Process.host_turn += 1
            path = hosts[Process.host_turn % len(hosts)] + path
        with self.client.request(method, path, name=name, json=body, headers=headers, catch_response=True) as resp:
            status = resp.status_code
            if status == 0:
                error = getattr(resp, "error", None)
                text = f"{type(error).__name__} {error}".lower()
                status = "timeout" if "timeout" in text or "timed out" in text else "conn_error"
                return status, "", "", None
            if status == 404:
                resp.success()  # an answer, not a failure: missing keys are part of the workload
            response_headers = resp.headers
            version = response_headers.get("X-Version", "") if response_headers else ""
            source = response_headers.get("X-Cache", "") if response_headers else ""
            data = None
            if want_json and status == 200:
                try:
                    data = resp.json()
                except ValueError:
                    data = None
            return status, version, source, data

    # --- open model -------------------------------------------------------------------------
    def run_open_model(self, settings: Settings):
        """Issue arrivals at intended times (constant or Poisson spacing) whatever the server does.

        Each arrival runs in its own greenlet, so a stalled server cannot hold back the next one;
        at ``--max-inflight`` greenlets an arrival is dropped and counted. Runs until the test stops.
        """
        pool = Process.pool
        seed = None if settings.seed is None else settings.seed + 23
        latency = Process.latency
        share = 1.0 / settings.open_users
        gaps = Gaps(settings.arrivals, seed)
        next_s = time.monotonic() + random.random() / (settings.rate * share)  # random phase per scheduler
        # -t ends the schedule: Locust would let this loop run on through --stop-timeout
        end_s = Process.test_start_mono + settings.run_time_s if settings.run_time_s else math.inf
        while Process.settings is settings and next_s < end_s:
            level = settings.shape.level(time.monotonic() - Process.test_start_mono)
            if level is None:
                break
            rate = level * settings.rate * share
            if rate <= 0:  # a shape at level 0: no arrivals, restart the schedule when it rises
                gevent.sleep(0.05)
                next_s = time.monotonic()
                continue
            now = time.monotonic()
            if next_s > now:
                gevent.sleep(next_s - now)
            intended_ns = int(next_s * 1e9)  # the schedule is absolute: oversleeping does not slow it
            if pool.full():
                latency.count("dropped", 1)
            else:
                pool.spawn(self.operation, settings, intended_ns)
            next_s += gaps(rate)
        if Process.settings is settings:  # the schedule is over: idle (not spin) until Locust stops this user
            gevent.sleep(0.1)


class CachestormShape(LoadTestShape):
    """The load shape for every locustfile (``--shape``; steady until -t by default).

    Closed model: users = level x -u. Open model: a fixed number of scheduler users (--open-users)
    whose arrival rate follows level x --rate; the shape only decides when the test ends.
    """

    use_common_options = True

    def __init__(self):
        super().__init__()
        self._settings = None

    def reset_time(self):
        super().reset_time()
        self._settings = None  # a new test (web UI restart) may come with new options

    def tick(self):
        options = self.runner.environment.parsed_options
        if self._settings is None:
            try:
                self._settings = build_settings(options, Process.domain or "profiles")
            except CachestormError as exc:
                fail(str(exc), self.runner.environment)
                return None
        settings = self._settings
        elapsed = self.get_run_time()
        if options.run_time and elapsed >= options.run_time:
            return None  # with a shape class, locust applies -t only after the shape ends: honour it here
        level = settings.shape.level(elapsed)
        if level is None:
            return None
        if settings.open_model:
            return settings.open_users, float(settings.open_users)
        users = max(0, round(level * (options.num_users or 1)))
        spawn_rate = options.spawn_rate or max(users, 1)
        return users, float(spawn_rate)
