"""Process faults on a dummy child process: SIGSTOP/SIGCONT and SIGKILL + restart callback."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from cachestorm.chaos.context import ChaosContext, TargetHandle
from cachestorm.chaos.faults import make_fault
from cachestorm.chaos.faults.process_signals import state_letter


@pytest.fixture()
def child():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def wait_state(pid: int, wanted: set, timeout: float = 5.0) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = state_letter(pid)
        if state in wanted:
            return state
        time.sleep(0.01)
    return state_letter(pid)


def test_pause_stops_and_resumes_the_process(child, tmp_path):
    ctx = ChaosContext(targets=[TargetHandle("dummy", child.pid, "http://127.0.0.1:1")],
                       ledger_path=tmp_path / "l")
    fault = make_fault("target-pause").bind(ctx, window_s=1)
    try:
        fault.apply()
        assert wait_state(child.pid, {"T"}) == "T"
    finally:
        fault.revert()
    assert wait_state(child.pid, {"S", "R"}) in {"S", "R"}
    assert fault.revert() == {"skipped": True}  # safe twice


def test_kill_then_restart_through_the_callback(child, tmp_path):
    restarted = []
    ctx = ChaosContext(targets=[TargetHandle("dummy", child.pid, "", restart=lambda: restarted.append(1))],
                       ledger_path=tmp_path / "l")
    fault = make_fault("target-kill").bind(ctx, window_s=1)
    assert fault.apply() == {"killed": ["dummy"]}
    assert child.wait(timeout=5) == -9
    assert fault.revert() == {"restarted": ["dummy"], "not_restartable": []}
    assert fault.revert() == {"skipped": True} and restarted == [1]


def test_process_faults_need_targets(tmp_path):
    fault = make_fault("target-pause", {"target": "nope"}).bind(
        ChaosContext(targets=[TargetHandle("a", 1)], ledger_path=tmp_path / "l"))
    with pytest.raises(Exception, match="no target named 'nope'"):
        fault.prepare()
