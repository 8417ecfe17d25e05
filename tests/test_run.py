"""`cachestorm run` end to end: real stack, real target, real Locust, a real fault, one run folder."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cachestorm.reports.history import read_run_history

from cachestorm.core.processes import pid_alive
from cachestorm.core.runfolder import RunFolder

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
    journal = RunFolder(run_dir).journal_records()
    kinds = {r["kind"] for r in journal}
    assert {"stack", "target", "load", "fault", "report"} <= kinds
    assert all(r["outcome"] == "ok" for r in journal if r["kind"] != "probe")
    assert [r["details"]["hypothesis"] for r in journal if r["kind"] == "hypothesis"] == ["held"]
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
    named = {key if key.startswith("profiles:") else f"profiles:{key}" for key in read_run_history(run_dir).key}
    assert named and set(truth["versions"]) == named | {"profiles:1"}  # the rows the histories name, and the first
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
    from cachestorm.chaos.toxiproxy import ToxiproxyClient

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
        targets_running = [pid for r in RunFolder(run_dir).journal_records() if r["what"] == "start targets"
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
        faults = [r for r in RunFolder(run_dir).journal_records() if r["kind"] == "fault"]
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
    (["--duration", "xyz"], "--duration: 'xyz' is not a duration"),
    (["--domain", "weather"], "unknown domain 'weather'"),
    (["--alpha", "0"], "--alpha must be a number > 0"),
    (["--keys", "0"], "--keys must be between 1 and 10,000,000 (got 0)"),
    (["--rate", "0"], "--rate must be a positive"),
    (["--rate", "inf"], "--rate must be a finite number (got inf)"),
    (["--rate", "nan"], "--rate must be a finite number (got nan)"),
    (["--duration", "5s", "--experiment", "hot-key-expiry", "--experiment-at", "500s"],
     "starts at 500s, after the load ends (5s)"),
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


def test_a_fault_scheduled_after_the_load_is_refused_before_anything_starts(tmp_path, cli_env):
    experiment = tmp_path / "late.yaml"
    experiment.write_text("name: late\nmethod:\n  - {fault: redis-latency, at: 500s, for: 2s, "
                          "settings: {latency_ms: 10}}\n")
    result = subprocess.run(CLI + ["run", "--duration", "5s", "--experiment", str(experiment),
                                   "--out", str(tmp_path / "runs")],
                            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: fault redis-latency of late starts at 500s, after the load ends (5s): "
        "lengthen --duration or move it with --experiment-at"]
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_fault_that_fails_to_apply_fails_the_run_the_report_and_the_gate(tmp_path, cli_env):
    """A toxic on a proxy that does not exist passes our checks (a proxy may be added by hand); only the
    proxy's API refuses it, mid-run."""
    experiment = tmp_path / "negative.yaml"
    experiment.write_text("name: negative-latency\nmethod:\n  - {fault: redis-latency, at: 1s, for: 2s, "
                          "settings: {proxy: no-such-proxy}}\n")
    result = subprocess.run(CLI + ["run", "--strategy", "cache-aside", "--duration", "4s", *SMALL,
                                   "--experiment", str(experiment), "--out", str(tmp_path / "runs")],
                            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "error: the run is marked failed" in result.stderr
    assert "proxy not found" in result.stderr
    [run_dir] = list((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "run.json").read_text())["outcome"] == "failed"
    report = json.loads((run_dir / "report.json").read_text())
    [fault] = report["faults"]
    assert fault["outcome"] == "failed" and "proxy not found" in fault["error"]
    assert report["headline"]["requests"] > 10  # the load itself ran and is reported
    gate_config = tmp_path / "gate.yaml"
    gate_config.write_text("slos:\n  - {name: anything, metric: p99_ms, max: 1000000}\n")
    for command in (["gate", str(run_dir), "-c", str(gate_config)], ["report", str(run_dir)]):
        verdict = subprocess.run(CLI + command, cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                                 timeout=120)
        assert verdict.returncode == 1, (command, verdict.stdout[-2000:], verdict.stderr[-2000:])


@pytest.mark.slow
@pytest.mark.parametrize("case", ["touched nothing", "no data"])
def test_a_fault_that_touched_nothing_or_a_probe_without_data_fails_run_report_and_gate(tmp_path, cli_env, case):
    """hot-key-expiry on the catalog domain of a profiles run expires 0 keys; no-cache has no lookups, so
    a hit-ratio probe has no data: neither is a pass."""
    experiment = tmp_path / "e.yaml"
    if case == "touched nothing":
        experiment.write_text("name: wrong-domain\nmethod:\n  - {fault: hot-key-expiry, at: 1s, "
                              "settings: {domain: catalog}}\n")
        strategy, says = "cache-aside", "hot-key-expiry at 1 s expired 0 keys: domain catalog has no keys on a profiles run"
    else:
        experiment.write_text("name: no-lookups\nsteady_state:\n  settle: 0.5s\n  probes:\n"
                              "    - {name: hit ratio, metric: hit_ratio, min: 0.1, window: 2s}\n"
                              "method:\n  - {fault: db-latency, at: 2s, for: 0.5s, settings: {latency_ms: 1}}\n")
        strategy, says = "no-cache", "no data for probe hit ratio (before)"
    result = subprocess.run(CLI + ["run", "--strategy", strategy, "--duration", "4s", *SMALL,
                                   "--experiment", str(experiment), "--out", str(tmp_path / "runs")],
                            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and says in result.stderr, result.stderr[-2000:]
    [run_dir] = list((tmp_path / "runs").iterdir())
    outcome = json.loads((run_dir / "run.json").read_text())["outcome"]
    assert outcome == ("failed" if case == "touched nothing" else "not_verified")
    report = json.loads((run_dir / "report.json").read_text())
    assert says in report["run"]["failure"]["error"]
    gate_config = tmp_path / "gate.yaml"
    gate_config.write_text("slos:\n  - {name: anything, metric: p99_ms, max: 1000000}\n")
    for command in (["gate", str(run_dir), "-c", str(gate_config)], ["report", str(run_dir)]):
        verdict = subprocess.run(CLI + command, cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                                 timeout=120)
        assert verdict.returncode == 1, (command, verdict.stdout[-2000:], verdict.stderr[-2000:])
        assert says in " ".join((verdict.stdout + verdict.stderr).split()), verdict.stdout[-2000:]  # rich wraps


@pytest.mark.parametrize("case", ["binary experiment", "out is a file", "out under a file", "out unwritable"])
def test_unusable_files_and_folders_are_one_line_exit_2(tmp_path, cli_env, case):
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81name: x\n" + bytes(range(256)))
    (tmp_path / "a-file").write_text("keep me\n")
    args = {"binary experiment": ["--experiment", str(tmp_path / "binary.yaml"), "--out", str(tmp_path / "runs")],
            "out is a file": ["--out", str(tmp_path / "a-file")],
            "out under a file": ["--out", str(tmp_path / "a-file" / "runs")],
            "out unwritable": ["--out", "/proc/cachestorm-runs"]}[case]
    result = subprocess.run(CLI + ["run", "--duration", "3s", *args], cwd=tmp_path, env=cli_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and ("not a text file" in line or "--out" in line), line
    assert (tmp_path / "a-file").read_text() == "keep me\n" and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_matrix_with_a_failed_fault_exits_1_after_running_everything(tmp_path, cli_env):
    experiment = tmp_path / "negative.yaml"
    experiment.write_text("name: negative-latency\nmethod:\n  - {fault: redis-latency, at: 1s, for: 1s, "
                          "settings: {proxy: no-such-proxy}}\n")
    result = subprocess.run(CLI + ["matrix", "--strategies", "cache-aside", "--experiments", f"none,{experiment}",
                                   "--duration", "3s", "--users", "5", "--out", str(tmp_path / "runs")],
                            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "error: 1 of 2 runs are marked failed" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_locust_exiting_1_fails_the_run(stack, tmp_path):
    """Locust's exit 1 used to count as "some requests failed"; now failed requests exit 0
    (--exit-code-on-error 0) and any other exit fails the run. Here Locust is told to exit 1 on
    errors and sent to a closed port, as a Locust that stopped over bad settings would exit 1."""
    from cachestorm.conductor import RunSettings
    from cachestorm.conductor import run as run_once
    from cachestorm.core.errors import CachestormError
    from cachestorm.core.processes import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    settings = RunSettings(strategy="cache-aside", duration_s=3, users=2, spawn_rate=2, keys=50, rows=100,
                           recompute_ms=1, warm=False, render=False, out=str(tmp_path / "runs"),
                           locust_args=["--exit-code-on-error", "1", "--hosts", f"{closed},{closed}"])
    with pytest.raises(CachestormError, match="Locust exited with code 1"):
        run_once(settings, stack=stack)
    [run_dir] = list((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "run.json").read_text())["outcome"] == "failed"


@pytest.mark.slow
def test_failed_requests_are_measured_not_a_failed_run(stack, tmp_path):
    from cachestorm.conductor import RunSettings
    from cachestorm.conductor import run as run_once
    from cachestorm.core.processes import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    settings = RunSettings(strategy="cache-aside", duration_s=3, users=2, spawn_rate=2, keys=50, rows=100,
                           recompute_ms=1, warm=False, render=False, out=str(tmp_path / "runs"),
                           locust_args=["--hosts", f"{closed},{closed}"])  # every request fails
    run_dir = run_once(settings, stack=stack)
    assert json.loads((run_dir / "run.json").read_text())["outcome"] == "ok"
    load = next(r for r in RunFolder(run_dir).journal_records() if r["kind"] == "load")
    assert load["details"]["returncode"] == 0


def test_a_matrix_with_a_fault_after_the_load_is_refused_before_anything_starts(tmp_path, cli_env):
    result = subprocess.run(CLI + ["matrix", "--strategies", "cache-aside", "--experiments", "hot-key-expiry",
                                   "--duration", "5s", "--out", str(tmp_path / "runs")],
                            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert "starts at 10s, after the load ends (5s)" in line
    assert not (tmp_path / "runs").exists()
