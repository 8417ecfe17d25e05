"""`cachestorm run` end to end: real stack, real target, real Locust, a real fault, one run folder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cachestorm.runfolder import read_journal
from cachestorm.stack.processes import pid_alive

CLI = [sys.executable, "-m", "cachestorm"]
SMALL = ["--users", "10", "--spawn-rate", "10", "--keys", "200", "--rows", "300", "--recompute", "20ms"]


@pytest.mark.slow
def test_short_run_writes_a_complete_run_folder(tmp_path, cli_env):
    result = subprocess.run(
        CLI + ["run", "--strategy", "cache-aside+coalescing", "--duration", "8s", *SMALL,
               "--experiment", "hot-key-expiry", "--experiment-at", "3s", "--out", str(tmp_path / "runs")],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    [run_dir] = list((tmp_path / "runs").iterdir())

    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["outcome"] == "ok" and meta["settings"]["strategy"] == "cache-aside+coalescing"
    journal = read_journal(run_dir)
    kinds = {r["kind"] for r in journal}
    assert {"stack", "target", "load", "fault", "report"} <= kinds
    assert all(r["outcome"] == "ok" for r in journal if r["kind"] != "probe")
    [fault] = [r for r in journal if r["kind"] == "fault"]
    assert fault["details"]["keys"] >= 1 and fault["what"].startswith("fault hot-key-expiry")
    load = next(r for r in journal if r["kind"] == "load")
    assert load["t_start"] <= fault["t_start"] <= load["t_end"]

    scrapes = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(scrapes) >= 5 and "error" not in scrapes[-1]
    assert any(k.startswith("cachestorm_db_queries_total") for k in scrapes[-1]["metrics"])
    assert len((run_dir / "pg_stats.jsonl").read_text().splitlines()) >= 5
    assert (run_dir / "latency" / "merged.jsonl").stat().st_size > 0
    assert list((run_dir / "histories").glob("*.tsv"))
    truth = json.loads((run_dir / "truth.json").read_text())
    assert len(truth["versions"]) == 300
    for name in ("report.html", "summary.md", "report.json", "locust/stats_stats.csv"):
        assert (run_dir / name).stat().st_size > 0, name
    report = json.loads((run_dir / "report.json").read_text())
    assert report["headline"]["requests"] > 100
    # nothing the run started is left running
    started = [pid for r in journal for pid in r["details"].get("pids", [])]
    started.append(load["details"]["pid"])
    assert len(started) == 5  # valkey, postgres, proxy, target, locust
    assert not [pid for pid in started if pid_alive(pid)]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_mid_fault_reverts_it_and_stops_everything(tmp_path, cli_env, sig):
    from chaos.toxiproxy import ToxiproxyClient

    up = subprocess.run(CLI + ["up", "--json"], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                        timeout=120)
    assert up.returncode == 0, up.stderr
    proxy = ToxiproxyClient(json.loads(up.stdout)["proxy api"])
    run = None
    try:
        run = subprocess.Popen(
            CLI + ["run", "--strategy", "cache-aside", "--duration", "60s", *SMALL,
                   "--experiment", "redis-partition", "--experiment-at", "1s", "--out", str(tmp_path / "runs")],
            cwd=tmp_path, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while not proxy.toxics("redis"):  # wait until the fault is really on the proxy
            assert run.poll() is None, run.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the fault never became active"
            time.sleep(0.1)
        [run_dir] = list((tmp_path / "runs").iterdir())  # only what this run started, not the machine's
        targets_running = [pid for r in read_journal(run_dir) if r["what"] == "start targets"
                           for pid in r["details"]["pids"]]
        assert targets_running
        run.send_signal(sig)
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 130, stderr[-2000:]
        assert "Traceback" not in stderr
        assert proxy.toxics("redis") == [] and proxy.get_proxy("redis")["enabled"]
        assert not [pid for pid in targets_running if pid_alive(pid)]
        [run_dir] = list((tmp_path / "runs").iterdir())
        assert json.loads((run_dir / "run.json").read_text())["outcome"] == "interrupted"
        faults = [r for r in read_journal(run_dir) if r["kind"] == "fault"]
        assert faults and faults[0]["details"].get("reverted", True)
    finally:
        if run is not None and run.poll() is None:  # a check failed before the signal: stop the run
            run.send_signal(signal.SIGINT)          # (lets it stop its target and Locust too)
            try:
                run.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                run.kill()
                run.communicate()
        subprocess.run(CLI + ["down"], cwd=tmp_path, env=cli_env, capture_output=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    (["--strategy", "nope"], "unknown strategy 'nope'"),
    (["--strategy", "cache-aside+wings"], "unknown protection 'wings'"),
    (["--experiment", "nope"], "unknown experiment 'nope'"),
    (["--redis-url", "foo"], "--redis-url 'foo' is not a valid URL"),
    (["--duration", "xyz"], "--duration 'xyz' is not a duration"),
    (["--domain", "weather"], "unknown domain 'weather'"),
    (["--alpha", "0"], "--alpha must be a number > 0"),
    (["--keys", "0"], "the key space cannot be empty"),
    (["--rate", "0"], "--rate must be a positive number"),
    (["--preset", "nope"], "--preset 'nope' is unknown"),
    (["--shape", "zigzag"], "--shape 'zigzag' is unknown"),
    (["--retry", "weird"], "--retry 'weird' is not understood"),
])
def test_bad_run_input_is_one_line_and_starts_nothing(tmp_path, cli_env, args, message):
    result = subprocess.run(CLI + ["run", *args, "--out", str(tmp_path / "runs")], cwd=tmp_path, env=cli_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.slow
def test_a_sigkilled_run_s_faults_expire_by_themselves(tmp_path, cli_env, stack, redis_client):
    """The run's own revert never comes; our proxy reverts the windowed fault when its window ends
    and the window-less one (until the end of the run) as soon as the run's process is gone."""
    import os

    from cachestorm.stack import save_state

    save_state(stack, tmp_path)   # the session's stack as `up` would leave it
    def redis_state():
        return redis_client.config_get("maxmemory*"), redis_client.acl_list()

    before = redis_state()
    experiment = tmp_path / "leftovers.yaml"
    experiment.write_text("name: leftovers\nmethod:\n  - {fault: lfu-tracking, at: 0s}\n"
                          "  - {fault: redis-acl-readonly, at: 0s, for: 3s}\n")
    run = subprocess.Popen(CLI + ["run", "--strategy", "cache-aside", "--duration", "60s", *SMALL,
                                  "--experiment", str(experiment), "--out", str(tmp_path / "runs")],
                           cwd=tmp_path, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not any("-@write" in line for line in redis_client.acl_list()) or \
                "lfu" not in redis_client.config_get("maxmemory-policy")["maxmemory-policy"]:
            assert run.poll() is None, run.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the faults never became active"
            time.sleep(0.1)
        children = _descendants(run.pid)
    finally:
        run.kill()
        run.wait()
        for pid in children:   # the run's targets and Locust (their own clean-up is not what this tests)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    killed = time.monotonic()
    deadline = killed + 3.5 + 10
    while redis_state() != before:
        assert time.monotonic() < deadline, redis_state()
        time.sleep(0.1)
    healed = subprocess.run(CLI + ["chaos", "heal"], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                            timeout=60)
    assert healed.returncode == 0, healed
