"""Runs do not poison each other: a run's stopped targets leave no query in PostgreSQL (an earlier
run's leftovers are cancelled at start), and two runs in one folder cannot overlap (a lock the kernel
releases, even on SIGKILL)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from cachestorm import conductor
from cachestorm.core.guardian import start_time
from cachestorm.core.runfolder import RunFolder

CLI = [sys.executable, "-m", "cachestorm"]
SMALL = ["--users", "3", "--spawn-rate", "3", "--keys", "50", "--rows", "100"]


class Sleeper(threading.Thread):
    """A backend in pg_sleep under a given application_name, as a target's recompute is."""

    def __init__(self, url: str, name: str):
        super().__init__(daemon=True)
        self.conn = psycopg.connect(url, application_name=name, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.error: str | None = None
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        try:
            self.conn.execute("SELECT pg_sleep(60)")
        except psycopg.Error as exc:
            self.error = type(exc).__name__
        finally:
            self.done.set()

    def running(self, url: str) -> bool:
        with psycopg.connect(url, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event = 'PgSleep'",
                                (self.pid,)).fetchone()[0] == 1


def _wait_sleeping(url: str, sleepers: list[Sleeper]) -> None:
    deadline = time.monotonic() + 10
    while not all(s.running(url) for s in sleepers):
        assert time.monotonic() < deadline, "the sleepers never reached pg_sleep"
        time.sleep(0.05)


def test_a_runs_targets_queries_are_cancelled_and_an_earlier_runs_leftovers_at_start(pg_conninfo):
    ours = Sleeper(pg_conninfo, conductor.target_app_name("target-1"))
    dead_run = Sleeper(pg_conninfo, "cachestorm-target 999999:1 target-1")  # its run is gone
    live_run = Sleeper(pg_conninfo, f"cachestorm-target 1:{start_time(1)} target-1")  # another live run's
    stranger = Sleeper(pg_conninfo, "psql")
    everyone = [ours, dead_run, live_run, stranger]
    try:
        _wait_sleeping(pg_conninfo, everyone)
        left = conductor.cancel_target_queries(pg_conninfo, leftovers=True)
        assert [b["pid"] for b in left] == [dead_run.pid]
        assert dead_run.done.wait(5) and dead_run.error
        assert all(s.running(pg_conninfo) for s in (ours, live_run, stranger))

        stopped = conductor.cancel_target_queries(pg_conninfo)
        assert [b["pid"] for b in stopped] == [ours.pid]
        assert ours.done.wait(5) and ours.error
        assert live_run.running(pg_conninfo) and stranger.running(pg_conninfo)
    finally:
        with psycopg.connect(pg_conninfo, autocommit=True) as conn:
            for sleeper in everyone:
                conn.execute("SELECT pg_terminate_backend(%s)", (sleeper.pid,))
        for sleeper in everyone:
            sleeper.done.wait(5)
            sleeper.conn.close()


def _holder(folder: Path, cli_env: dict) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom cachestorm.conductor import run_lock\n"
                               "with run_lock():\n    print('held', flush=True)\n    time.sleep(120)\n"],
                              cwd=folder, env=cli_env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_run_in_a_folder_refuses_and_a_killed_runs_lock_is_released(tmp_path, cli_env):
    holder = _holder(tmp_path, cli_env)
    try:
        second = subprocess.run(CLI + ["run", "--duration", "3s", *SMALL, "--out", str(tmp_path / "runs")],
                                cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        assert "another run is going on in this folder" in second.stderr and f"pid {holder.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
        assert not (tmp_path / "runs").exists()
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock with the process
        holder.wait()
    again = _holder(tmp_path, cli_env)
    again.kill()
    again.wait()


@pytest.mark.slow
def test_a_run_with_long_recomputes_leaves_no_query_behind_and_a_second_run_waits_its_turn(tmp_path, cli_env):
    """#21: after `run --recompute 60s -d 3s` the stopped targets' queries kept all the DB's slots, and the
    next run on the same `up` stack measured their p99 (2 s instead of 56 ms)."""
    up = subprocess.run(CLI + ["up", "--json"], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                        timeout=120)
    assert up.returncode == 0, up.stderr
    postgres_url = json.loads((tmp_path / ".cachestorm" / "stack.json").read_text())["postgres_url"]
    run = None
    leftover = Sleeper(postgres_url, "cachestorm-target 999999:1 target-1")  # a killed run's recompute
    try:
        run = subprocess.Popen(CLI + ["run", "--strategy", "cache-aside", "--duration", "4s", *SMALL, "--cold",
                                      "--recompute", "60s", "--out", str(tmp_path / "runs")],
                               cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while not list((tmp_path / "runs").glob("*/logs")):  # it has its folder (and the lock)
            assert run.poll() is None, run.communicate()[1][-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = subprocess.run(CLI + ["run", "--duration", "3s", *SMALL, "--out", str(tmp_path / "runs2")],
                                cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "another run is going on in this folder" in second.stderr, second.stderr
        _, stderr = run.communicate(timeout=150)
        assert run.returncode == 0, stderr[-2000:]
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            left = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                "'cachestorm-target %' OR wait_event = 'PgSleep'").fetchone()[0]
        assert left == 0
        [run_dir] = list((tmp_path / "runs").iterdir())
        journal = RunFolder(run_dir).journal_records()
        [found] = [r for r in journal if r["what"] == "cancel leftover queries"]
        assert found["details"]["terminated"] == 1 and leftover.done.wait(5) and leftover.error
        [cancel] = [r for r in journal if r["what"] == "cancel target queries"]
        assert cancel["outcome"] == "ok" and cancel["details"]["terminated"] >= 1  # the recomputes it cut
    finally:
        if run is not None and run.poll() is None:
            run.send_signal(signal.SIGINT)
            try:
                run.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                run.kill()
        subprocess.run(CLI + ["down"], cwd=tmp_path, env=cli_env, capture_output=True, timeout=60)
        leftover.done.wait(10)
        leftover.conn.close()
