"""Every incident knob reaches the process that uses it (targets, Locust) from run, matrix and capacity;
an experiment's `run:` section recommends them; bad values are one line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cachestorm.conductor import RunSettings, apply_recommendations, locust_traffic_args, target_argv
from cachestorm.stack import StackState

CLI = [sys.executable, "-m", "cachestorm"]
STACK = StackState("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/0", "postgresql://postgres@127.0.0.1:5432/x",
                   "postgresql://postgres@127.0.0.1:5433/x", "http://127.0.0.1:8474")


def pairs(argv: list[str]) -> dict[str, str]:
    return {flag: value for flag, value in zip(argv, argv[1:], strict=False) if flag.startswith("--")}


def test_knobs_reach_the_targets_and_locust():
    settings = RunSettings(db_capacity=3, recompute_mode="cpu", request_timeout_s=1.5, jitter=0.3, xfetch_beta=2.0,
                           lock_ms=800.0, max_stale_s=7.0, negative_ttl_s=4.0, missing_share=0.2,
                           owner_read_share=0.1)
    target = pairs(target_argv(settings, 8000, "t1"))
    assert {k: target[k] for k in ("--db-capacity", "--recompute-mode", "--jitter", "--xfetch-beta", "--lock-ms",
                                   "--max-stale", "--negative-ttl")} == {
        "--db-capacity": "3", "--recompute-mode": "cpu", "--jitter": "0.3", "--xfetch-beta": "2.0",
        "--lock-ms": "800.0", "--max-stale": "7.0", "--negative-ttl": "4.0"}
    locust = pairs(locust_traffic_args(settings))
    assert (locust["--request-timeout"], locust["--missing-share"], locust["--owner-read-share"]) == ("1.5", "0.2", "0.1")


def test_unset_protection_knobs_leave_the_targets_defaults():
    target = target_argv(RunSettings(), 8000, "t1")
    assert not {"--jitter", "--xfetch-beta", "--lock-ms", "--max-stale", "--negative-ttl"} & set(target)


def test_an_experiment_recommends_db_pool_and_timeouts_but_typed_flags_win():
    from cachestorm.chaos.experiment import parse_experiment

    experiment = parse_experiment("name: x\nmethod:\n  - {fault: hot-key-expiry, at: 1s}\n"
                                  "run: {recompute: 250ms, db_capacity: 2, pool_timeout: 3s, request_timeout: 1s,"
                                  " ttl: 1h, rate: 150}\n")
    settings = RunSettings(explicit=frozenset({"rate"}), rate=99.0)
    applied = apply_recommendations(settings, experiment)
    assert applied == {"recompute_ms": 250.0, "db_capacity": 2, "pool_timeout_s": 3.0, "request_timeout_s": 1.0,
                       "ttl_s": 3600.0}
    assert settings.rate == 99.0


def test_an_unknown_run_recommendation_is_refused():
    from cachestorm.chaos.experiment import parse_experiment

    from cachestorm.core.errors import CachestormError

    with pytest.raises(CachestormError, match="unknown field"):
        parse_experiment("name: x\nmethod:\n  - {fault: hot-key-expiry, at: 1s}\nrun: {db_cores: 2}\n")


BAD_KNOBS = [("--db-capacity", "-1", "--db-capacity"), ("--jitter", "-0.5", "--jitter"),
             ("--request-timeout", "soon", "--request-timeout"), ("--missing-share", "2", "--missing-share"),
             ("--lease-ms", "-5", "--lock-ms"), ("--recompute-mode", "gpu", "--recompute-mode"),
             # issue 21: these ran (exit 0), or were refused only by the started target (exit 1)
             ("--jitter", "2", "--jitter"), ("--xfetch-beta", "-1", "--xfetch-beta"),
             ("--db-capacity", "99999999999999999999", "--db-capacity")]


@pytest.mark.parametrize("command, flag, value, words",
                         [(["run"], *bad) for bad in BAD_KNOBS]
                         + [(["matrix", "--strategies", "cache-aside"], *BAD_KNOBS[0]),
                            (["matrix", "--strategies", "cache-aside"], *BAD_KNOBS[4]),
                            (["capacity", "--strategy", "cache-aside"], *BAD_KNOBS[0]),
                            (["capacity", "--strategy", "cache-aside"], *BAD_KNOBS[4]),
                            (["matrix", "--strategies", "cache-aside"], *BAD_KNOBS[6]),
                            (["capacity", "--strategy", "cache-aside"], *BAD_KNOBS[7])])
def test_bad_knobs_are_one_line_exit_2_on_every_command(command, flag, value, words, tmp_path, cli_env):
    result = subprocess.run(CLI + command + [flag, value, "--out", str(tmp_path)], cwd=tmp_path, env=cli_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-1500:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr, result.stderr
