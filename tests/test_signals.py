"""A second (third) signal never cuts a run's clean-up short; what a run lost is still stopped.

The end-to-end trial is scripts/signal_trials.py's (run it with more trials by hand); each trial looks
only at what its own run recorded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cachestorm.core import guardian, interrupts

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cachestorm"]


def _trials_module():
    spec = importlib.util.spec_from_file_location("signal_trials", REPO / "scripts" / "signal_trials.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _fresh_interrupt_records(monkeypatch):
    """The signals these tests send stay theirs: a later test's stack start must not see them
    (`raise_if_swallowed`)."""
    monkeypatch.setattr(interrupts, "_seen", [])
    monkeypatch.setattr(interrupts, "_held", [])


def test_the_first_signal_raises_and_the_next_are_held_until_the_clean_up_ends():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.armed():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # interrupted by the handler's KeyboardInterrupt
                steps.append("not reached")
            except KeyboardInterrupt:
                for name in ("revert", "stop load", "stop targets"):
                    os.kill(os.getpid(), signal.SIGINT)  # a second, third, fourth signal mid-clean-up
                    os.kill(os.getpid(), signal.SIGHUP)
                    time.sleep(0.01)
                    steps.append(name)
                raise
    assert steps == ["revert", "stop load", "stop targets"]
    assert signal.getsignal(signal.SIGTERM) is not interrupts.on_interrupt  # pytest's handlers are back


def test_a_clean_up_that_began_without_a_signal_is_shielded_and_says_it_was_asked_to_stop():
    done = []
    with interrupts.armed():
        with interrupts.shielded():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            done.append("stopped everything")
        assert interrupts.interrupted()  # the caller then marks the run and raises KeyboardInterrupt
    assert done == ["stopped everything"]
    assert not interrupts.interrupted()


def _orphan() -> int:
    """A process of its own session that is not our child (as a target is not the test's): its PID."""
    out = subprocess.run([sys.executable, "-c", "import subprocess as s; print(s.Popen(['sleep', '120'], "
                          "start_new_session=True, stdout=s.DEVNULL, stderr=s.DEVNULL).pid)"],
                         capture_output=True, text=True, timeout=30).stdout
    return int(out)


def _gone(pid: int, timeout_s: float = 15) -> bool:
    deadline = time.monotonic() + timeout_s
    while guardian.start_time(pid) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_process_the_owner_lost_is_stopped_by_the_guardian_and_else_by_down(tmp_path, cli_env):
    """An interrupt between a child's start and its registration loses it to its owner: the owner's
    record of it stays, and the guardian (or, if that was killed too, `cachestorm down`) stops it."""
    lost = [_orphan(), _orphan()]
    try:
        first = guardian.Guardian(tmp_path, "run")
        first.track_process(lost[0])
        first.close(orphans=True)  # the guardian stops it
        assert _gone(lost[0])
        assert not first.path.exists()

        second = guardian.Guardian(tmp_path, "run")
        second.track_process(lost[1])
        os.kill(second.record["guardian"]["pid"], signal.SIGKILL)  # the whole tree killed but us
        second._process.wait(timeout=10)
        second.close(orphans=True)
        assert second.path.exists() and guardian.start_time(lost[1]) is not None
        # `down` cleans a record whose owner and guardian are gone: pretend we are gone too
        record = json.loads(second.path.read_text())
        record["owner"]["start_time"] = -1
        second.path.write_text(json.dumps(record))
        down = subprocess.run(CLI + ["down"], cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stderr
        assert f"process {lost[1]}" in down.stdout
        assert _gone(lost[1])
    finally:
        for pid in lost:
            if guardian.start_time(pid) is not None:
                os.kill(pid, signal.SIGKILL)


def test_a_clean_owner_leaves_no_record_and_kills_nothing(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        owner = guardian.Guardian(tmp_path, "run")
        owner.track_process(process.pid)
        process.kill()
        process.wait()
        owner.close(orphans=True)
        assert not owner.path.exists()
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
def test_double_signals_at_random_moments_leave_nothing_behind(tmp_path):
    """20 runs of 3 s on one `up` stack, each sent SIGTERM/SIGINT/SIGHUP at a random moment and again
    shortly after (sometimes a third time): every trial clean (see scripts/signal_trials.py)."""
    trials = _trials_module()
    rng = random.Random(int(os.environ.get("CACHESTORM_SIGNAL_SEED", "21")))
    proxy_api = trials.up(tmp_path)
    results = []
    try:
        for _ in range(20):
            results.append(trials.trial(tmp_path, rng, proxy_api, rng.uniform(0.2, 5.5)))
    finally:
        trials.down(tmp_path)
    assert [r for r in results if r] == []
