"""A run killed at any moment leaves nothing behind; a dependency lost mid-run fails the run loudly.

Each test looks only at the processes it started (from the run's own records), never at the machine's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cachestorm.core.guardian import OWNED_DIR, start_time

CLI = [sys.executable, "-m", "cachestorm"]
SMALL = ["--users", "5", "--spawn-rate", "5", "--keys", "100", "--rows", "200", "--recompute", "10ms"]


def _alive(entry: dict) -> bool:
    return entry["start_time"] is not None and start_time(entry["pid"]) == entry["start_time"]


def _start_run(tmp_path: Path, cli_env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(CLI + ["run", "--strategy", "cache-aside", "--duration", "60s", *SMALL, *extra,
                                   "--out", str(tmp_path / "runs")],
                            cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _record_once_loaded(tmp_path: Path, run: subprocess.Popen, processes: int) -> dict:
    """The run's guardian record, once it names `processes` processes (Locust is the last)."""
    path = tmp_path / OWNED_DIR / f"{run.pid}.json"
    deadline = time.monotonic() + 120
    while True:
        assert run.poll() is None, run.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run never started its load"
        try:
            record = json.loads(path.read_text())
            if len(record["processes"]) >= processes:
                return record
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)


def _wait_gone(entries: list[dict], timeout_s: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [e for e in entries if _alive(e)]
        if not left:
            return []
        time.sleep(0.1)
    return [e for e in entries if _alive(e)]


@pytest.mark.slow
def test_sigkilled_run_leaves_no_process_and_no_temp_folder(tmp_path, cli_env):
    run = _start_run(tmp_path, cli_env)
    try:
        record = _record_once_loaded(tmp_path, run, processes=5)  # valkey, postgres, proxy, target, locust
        assert record["dirs"], "the run's own stack folder is recorded"
        run.kill()
        run.communicate()
        assert _wait_gone(record["processes"]) == []
        assert _wait_gone([record["guardian"]], 10) == []  # it deletes the folders, then exits
        assert not any(Path(d).exists() for d in record["dirs"])
        assert not (tmp_path / OWNED_DIR / f"{run.pid}.json").exists()
    finally:
        if run.poll() is None:
            run.kill()
        subprocess.run(CLI + ["down"], cwd=tmp_path, env=cli_env, capture_output=True, timeout=60)


@pytest.mark.slow
def test_down_stops_what_a_run_killed_with_its_guardian_left(tmp_path, cli_env):
    run = _start_run(tmp_path, cli_env)
    try:
        record = _record_once_loaded(tmp_path, run, processes=5)
        os.kill(record["guardian"]["pid"], signal.SIGKILL)  # the whole tree killed: nobody cleans up
        run.kill()
        run.communicate()
        time.sleep(0.5)
        assert [e for e in record["processes"] if _alive(e)], "something must be left for `down` to stop"
        down = subprocess.run(CLI + ["down"], cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stderr
        assert "stopped what a killed run left" in down.stdout
        assert _wait_gone(record["processes"], 10) == []
        assert not any(Path(d).exists() for d in record["dirs"])
        again = subprocess.run(CLI + ["down"], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                               timeout=60)
        assert "nothing to stop" in again.stdout
    finally:
        if run.poll() is None:
            run.kill()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["postgres killed", "down from another terminal"])
def test_a_lost_dependency_fails_the_run_and_stops_everything(tmp_path, cli_env, how):
    up = subprocess.run(CLI + ["up", "--json"], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                        timeout=120)
    assert up.returncode == 0, up.stderr
    state = json.loads((tmp_path / ".cachestorm" / "stack.json").read_text())
    run = _start_run(tmp_path, cli_env)
    try:
        record = _record_once_loaded(tmp_path, run, processes=2)  # target, locust (the stack is up's)
        time.sleep(1)
        if how == "postgres killed":
            [postgres] = [s for s in state["servers"] if s["kind"] == "postgres"]
            os.kill(postgres["pid"], signal.SIGKILL)
        else:
            down = subprocess.run(CLI + ["down"], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                                  timeout=60)
            assert down.returncode == 0, down.stderr
        _, stderr = run.communicate(timeout=90)
        assert run.returncode == 1, stderr[-2000:]
        assert "Traceback" not in stderr
        assert "lost a dependency" in stderr and "marked failed" in stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
        [run_dir] = list((tmp_path / "runs").iterdir())
        meta = json.loads((run_dir / "run.json").read_text())
        assert meta["outcome"] == "failed" and "lost a dependency" in meta["error"]
        assert (run_dir / "report.html").exists(), "a failed run is still reported"
        assert _wait_gone(record["processes"], 10) == []  # target and Locust stopped
        report = subprocess.run(CLI + ["report", str(run_dir)], cwd=tmp_path, env=cli_env, capture_output=True,
                                text=True, timeout=60)
        assert report.returncode != 0, "report of a failed run exits non-zero"
    finally:
        if run.poll() is None:
            run.kill()
        subprocess.run(CLI + ["down"], cwd=tmp_path, env=cli_env, capture_output=True, timeout=60)


def test_two_parallel_ups_in_one_folder_start_one_stack(tmp_path, cli_env):
    ups = [subprocess.Popen(CLI + ["up", "--json"], cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in ups]
    try:
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 2], results
        assert any("already up" in err for _, _, err in results)
    finally:
        down = subprocess.run(CLI + ["down"], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                              timeout=60)
    assert "stopped: redis" in down.stdout or "stopped: proxy" in down.stdout, down.stdout


def test_ctrl_c_while_a_target_starts_stops_it(tmp_path):
    """The interrupt lands between the spawn and the health check; the caller never got to track it."""
    from cachestorm.targets.process import TargetProcess

    from cachestorm.core.processes import pid_alive

    # a stand-in that never becomes healthy; its command line names `targets` as a real one's does
    argv = [sys.executable, "-c", "import time; time.sleep(120)", "targets"]
    target = TargetProcess("target-1", 9, argv, tmp_path / "target.log")
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            target.start(timeout_s=30)
    finally:
        timer.cancel()
    assert target.pid is not None
    deadline = time.monotonic() + 10
    while pid_alive(target.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(target.pid)
