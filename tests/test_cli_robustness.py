"""Bad input gets one `error: ...` line and exit 2; an interrupted `up` leaves nothing running.

Each case here was a traceback, a multi-line error, a silent misbehaviour or an orphan before its fix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cachestorm.chaos.context import ChaosContext
from cachestorm.chaos.ledger import Ledger

from cachestorm.core.errors import CachestormError
from tests.own_processes import processes_with

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cachestorm", *args]


def one_line_error(command: list[str], cwd: Path, env: dict, timeout: float = 60) -> str:
    """Run `command`; it must exit 2 with exactly one stderr line `error: ...` and no traceback."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (("run", "--users", "abc"), ("--users", "cachestorm run --help")),
    (("frobnicate",), ("frobnicate", "cachestorm --help")),
    (("capacity",), ("--strategy", "cachestorm capacity --help")),
    (("chaos", "apply"), ("fault", "cachestorm chaos apply --help")),
    (("bench", "proxy", "--requests", "0"), ("--requests", "cachestorm bench proxy --help")),  # used to hang
    (("bench", "proxy", "--clients", "-3"), ("--clients", "cachestorm bench proxy --help")),
])
def test_usage_errors_are_one_line(args, words, tmp_path, cli_env):
    line = one_line_error(cli(*args), tmp_path, cli_env)
    for word in words:
        assert word in line


def test_proxy_port_out_of_range_is_refused_not_wrapped(tmp_path, cli_env):
    # asyncio used to bind 99999 - 65536 = 34463 and serve there
    line = one_line_error(cli("proxy", "serve", "--port", "99999"), tmp_path, cli_env, timeout=20)
    assert "--port 99999" in line and "65535" in line


def test_proxy_unusable_host_names_the_host(tmp_path, cli_env):
    line = one_line_error(cli("proxy", "serve", "--host", "192.0.2.1", "--port", "0"), tmp_path, cli_env, timeout=20)
    assert "--host" in line and "--port" not in line.split(";")[-1]


@pytest.mark.parametrize("file, content, words", [
    ("run.json", "[]", ("run.json", "JSON object")),
    ("journal.jsonl", '5\n{"what": "load"}\n', ("journal.jsonl", "line 1")),
])
def test_damaged_run_folder_is_one_line(file, content, words, tmp_path, cli_env):
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"started_at": time.time(), "settings": {}}))
    (run_dir / file).write_text(content)
    for command in (cli("report", str(run_dir)), cli("compare", str(run_dir), str(run_dir))):
        line = one_line_error(command, tmp_path, cli_env)
        for word in words:
            assert word in line


class _Fault:
    name = "redis-oom"
    state = {"maxmemory": "0"}
    window_s = 60.0

    def settings(self) -> dict:
        return {}


def test_ledger_entry_after_a_torn_line_is_not_lost(tmp_path):
    """A controller killed mid-write leaves a line without newline; the next fault used to be glued to it,
    unreadable, so `chaos heal` said "nothing to heal" with the fault still active."""
    path = tmp_path / "active-faults.jsonl"
    path.write_text('{"op": "apply", "id": "torn", "fault": "redis-la')
    ledger = Ledger(path)
    entry_id = ledger.add(_Fault(), ChaosContext(ledger_path=path))
    assert [entry["id"] for entry in ledger.active()] == [entry_id]
    ledger.mark_reverted(entry_id)
    assert ledger.active() == []


def test_locust_bad_experiment_fails_before_the_test(tmp_path, cli_env):
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO / "locustfiles" / "profiles.py"), "--headless",
         "-u", "1", "-r", "1", "-t", "5s", "--host", "http://127.0.0.1:9", "--experiment", "no-such-experiment"],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown experiment 'no-such-experiment'")
    assert "Aggregated" not in result.stdout + result.stderr  # no test ran
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, words", [
    (("--rate", "1e9"), "--rate 1e+09/s is more than one Locust process schedules on time"),  # never stopped
    (("--hot-keys", "2000"), "--hot-keys must be between 0 and --keys (1000)"),
    (("--alpha", "nan"), "--alpha must be a finite number"),
])
def test_plain_locust_refuses_bad_custom_arguments_before_the_test(args, words, tmp_path, cli_env):
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO / "locustfiles" / "profiles.py"), "--headless",
         "-u", "1", "-r", "1", "-t", "5s", "--host", "http://127.0.0.1:9", *args],
        cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {words}"), result.stderr[-2000:]
    assert "Aggregated" not in result.stdout + result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_up_while_postgres_starts_leaves_nothing(sig, tmp_path, cli_env):
    """The signal lands while PostgreSQL is spawned but not yet ready: it used to stay running."""
    temp = Path(tempfile.mkdtemp(prefix="cachestorm-robustness-"))  # PostgreSQL's user must reach it when root
    temp.chmod(0o755)
    try:
        _interrupt_up(sig, tmp_path, temp, cli_env)
    finally:
        subprocess.run(cli("down"), cwd=tmp_path, env=cli_env, capture_output=True, timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def _interrupt_up(sig, tmp_path: Path, temp: Path, cli_env: dict) -> None:
    marker = f"CACHESTORM_ROBUSTNESS_TEST={os.getpid()}-{sig}"
    env = {**cli_env, "TMPDIR": str(temp), marker.split("=")[0]: marker.split("=")[1]}
    process = subprocess.Popen(cli("up"), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 60
    # the server's log is opened just before PostgreSQL is spawned; it is ready some 100 ms later
    while not list(temp.glob("cachestorm-stack-*/postgres-*/server.log")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "PostgreSQL never started"
        time.sleep(0.005)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 15
    while processes_with(marker, temp) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker, temp) == []
    assert list(temp.iterdir()) == []            # the stack's temp folder is gone
    assert not (tmp_path / ".cachestorm" / "stack.json").exists()


def test_an_interrupt_lost_in_a_destructor_is_raised_afterwards():
    """Python drops a KeyboardInterrupt raised inside __del__ ("Exception ignored"); the CLI's handler
    remembers it so starting the stack still stops (cachestorm/interrupts.py)."""
    code = (
        "import os, signal, sys\n"
        "from cachestorm.core import interrupts\n"
        "interrupts.install()\n"
        "class Holder:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        sum(range(1000))  # the handler runs in here; its exception is printed and lost\n"
        "Holder()\n"
        "print('carried on')\n"
        "try:\n"
        "    interrupts.raise_if_swallowed()\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert "carried on" in done.stdout, done.stderr  # the loss really happened: the interrupt did not propagate
    assert "Traceback" not in done.stderr  # and Python's "Exception ignored" report of it is not printed
    assert done.returncode == 130


@pytest.mark.parametrize("command", [
    ("up", "--redis-url", "redis://192.0.2.1:6379/0"),
    ("run", "--postgres-url", "postgresql://postgres@192.0.2.1:5432/db", "--duration", "1s"),
    ("capacity", "-s", "cache-aside", "--toxiproxy-url", "http://192.0.2.1:8474"),
])
def test_a_server_on_another_host_needs_allow_remote(command, tmp_path, cli_env):
    """cachestorm sends load and faults to the servers it is given: another host is refused before
    anything connects anywhere (192.0.2.1 is TEST-NET-1), with the flag that allows it named."""
    line = one_line_error(cli(*command), tmp_path, cli_env, timeout=30)
    assert "192.0.2.1 is not this machine" in line and "--allow-remote" in line
    assert not (tmp_path / ".cachestorm").exists() and not (tmp_path / "runs").exists()


def test_allow_remote_lets_another_host_through_validation():
    from cachestorm.stack import StackSettings, validate_stack_settings

    remote = "redis://192.0.2.1:6379/0"
    validate_stack_settings(StackSettings(redis_url=remote, allow_remote=True))  # no connection is made here
    validate_stack_settings(StackSettings(redis_url="redis://localhost:6379/0"))
    validate_stack_settings(StackSettings(postgres_url="postgresql://u@[::1]:5432/db"))


@pytest.mark.parametrize("module_text", [None, "import cachestorm_no_such_dependency\n", "def oops(:\n"])
def test_a_command_module_that_does_not_load_is_one_loud_line(module_text, tmp_path, monkeypatch, capsys):
    """A listed command whose module is missing, or fails to import, was left out of the CLI without a word."""
    from cachestorm.cli import main as cli

    if module_text is not None:
        (tmp_path / "broken_cmd.py").write_text(module_text)
        monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMANDS", {"broken": "broken_cmd:broken"})
    with pytest.raises(CachestormError, match="'broken' cannot be loaded from broken_cmd:broken") as raised:
        cli.build_app()  # in tests it raises, its cause chained
    assert raised.value.__cause__ is not None

    monkeypatch.setattr(sys, "argv", ["cachestorm", "--help"])
    monkeypatch.setattr("cachestorm.core.interrupts.install", lambda: None)  # keep pytest's signal handlers
    with pytest.raises(SystemExit) as exited:
        cli.main()
    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("error: command 'broken'")


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="needs redis-benchmark (apt-get install redis-tools)")
def test_the_proxy_benchmark_runs_end_to_end(tmp_path):
    """`cachestorm bench proxy` builds its proxies to a Unix-socket upstream: the proxy's guard must be
    told that socket (it answered 403 and the benchmark died before measuring anything)."""
    done = subprocess.run([sys.executable, "-m", "cachestorm", "bench", "proxy", "--requests", "2000"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "kernel/unix" in done.stdout and "GET/s" in done.stdout


def test_a_ledger_keeps_no_postgres_password_and_is_created_private(tmp_path):
    path = tmp_path / "new" / "active-faults.jsonl"
    ledger = Ledger(path)
    ctx = ChaosContext(redis_url="redis://127.0.0.1:1/0", postgres_url="postgresql://postgres:Pg-S3cret-42@127.0.0.1:2/db",
                       ledger_path=path)
    entry_id = ledger.add(_Fault(), ctx)
    assert path.stat().st_mode & 0o777 == 0o600
    assert b"Pg-S3cret-42" not in path.read_bytes()
    [entry] = ledger.active()
    assert entry["context"]["postgres_url"] == "postgresql://postgres:***@127.0.0.1:2/db"
    assert entry["context"]["redis_url"] == "redis://127.0.0.1:1/0"
    ledger.mark_reverted(entry_id)


@pytest.mark.parametrize("kind", ["symlink", "someone else's", "a folder", "text"])
def test_a_ledger_it_does_not_recognise_is_refused_and_untouched(kind, tmp_path):
    import pwd

    path = tmp_path / "active-faults.jsonl"
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    if kind == "symlink":
        path.symlink_to(target)
    elif kind == "someone else's":
        if os.geteuid() != 0:
            pytest.skip("giving a file away needs root")
        path.write_bytes(b"")
        os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    elif kind == "a folder":
        path.mkdir()
    else:
        path.write_bytes(b"# my notes\n")
    before = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    with pytest.raises(CachestormError) as refused:
        Ledger(path).add(_Fault(), ChaosContext(ledger_path=path))
    assert refused.value.exit_code == 2 and "\n" not in str(refused.value) and str(path) in str(refused.value)
    assert target.read_bytes() == b""
    if before is not None:
        assert path.read_bytes() == before
# ---------------------------------------------------------------- values refused before anything starts
# (issue 21, items 6 and 7). In-process, so hundreds of cases take a second: the CLI's main() exactly as
# `cachestorm` runs it, with starting a stack replaced by a failure (a value that got through would start one).

def _no_stack(*args, **kwargs):
    raise AssertionError("a stack was started: the value was not refused up front")


_CLI = []


def _cli_once():
    """The CLI's click command, built once (main() calls it exactly as it calls the Typer app)."""
    import typer.main

    from cachestorm.cli import main as cli_main

    if not _CLI:
        _CLI.append(typer.main.get_command(cli_main.build_app()))
    return _CLI[0]


@pytest.fixture
def in_process(tmp_path, monkeypatch, capsys):
    """Run `cachestorm ARGS` in this process from tmp_path; return (exit code, stderr lines, seconds)."""
    from cachestorm import capacity, conductor, matrix
    from cachestorm.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("cachestorm.core.interrupts.install", lambda: None)  # keep pytest's signal handlers
    for module in (conductor, matrix, capacity):
        monkeypatch.setattr(module, "start_stack", _no_stack)
    monkeypatch.setattr(conductor, "_existing_stack", lambda settings: _no_stack())
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    _cli_once()
    monkeypatch.setattr(cli_main, "build_app", _cli_once)  # each build registers every command again

    def call(*args: str):
        monkeypatch.setattr(sys, "argv", ["cachestorm", *args])
        start = time.monotonic()
        with pytest.raises(SystemExit) as exited:
            cli_main.main()
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert "Traceback" not in captured.err + captured.out
        return exited.value.code, lines, time.monotonic() - start

    return call


def refused_up_front(call, tmp_path: Path, args, words) -> str:
    code, lines, seconds = call(*args)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, lines)
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / ".cachestorm" / "stack.json").exists()
    assert not (tmp_path / "runs").exists()  # no run folder either: refused before it was made
    assert seconds < 10, seconds  # no server was waited for
    return lines[0]


LOAD_COMMANDS = {"run": ["run"], "matrix": ["matrix", "--strategies", "cache-aside", "--experiments", "none"],
                 "capacity": ["capacity", "-s", "cache-aside"], "demo": ["demo"]}
# (commands, extra args, words the one line must hold)
BAD_VALUES = [
    (("run",), ["--label", "x" * 300], ["--label", "100 characters"]),       # was OSError: File name too long
    (("run",), ["--label", "../escape"], ["--label", "letters, digits"]),
    (("run", "matrix"), ["--users", "99999999999999999999"], ["--users", "10,000"]),  # ran, exit 0
    (("run",), ["--users", "0"], ["--users"]),
    (("run",), ["--ttl", "0"], ["--ttl", "domain's default"]),            # became the domain's default
    (("run",), ["--ttl", "999999h"], ["--ttl", "30 days"]),
    (("run", "capacity"), ["--keys", "0"], ["--keys"]),
    (("run",), ["--hot-keys", "0"], ["--hot-keys", "between 1 and --keys"]),
    (("run",), ["--hot-keys", "2000"], ["--hot-keys", "(1000)"]),            # more than --keys
    (("run", "matrix", "capacity"), ["--jitter", "2"], ["--jitter", "below 1"]),
    (("run", "matrix", "capacity"), ["--jitter", "nan"], ["--jitter", "finite"]),
    (("run", "matrix", "capacity"), ["--xfetch-beta", "-1"], ["--xfetch-beta", "negative"]),
    (("run", "matrix", "capacity"), ["--recompute", "999999h"], ["--recompute", "60s"]),
    (("run",), ["--experiment", ""], ["--experiment", "empty"]),            # ran with no experiment
    (("run",), ["--experiment-at", "5s"], ["--experiment-at", "--experiment"]),
    (("run",), ["--spawn-rate", "0"], ["--spawn-rate"]),                   # refused after the stack (exit 1)
    (("run",), ["--spawn-rate", "-1"], ["--spawn-rate"]),
    (("run",), ["--spawn-rate", "nan"], ["--spawn-rate", "finite"]),
    (("run", "capacity"), ["--pool-size", "100000"], ["--pool-size", "250"]),
    (("run", "capacity"), ["--pool-size", "200", "--instances", "2"], ["--pool-size 200 x --instances 2"]),
    (("run", "capacity"), ["--pool-timeout", "0"], ["--pool-timeout"]),
    (("run", "matrix", "demo"), ["--duration", "99999999999999999999h"], ["--duration", "24h"]),
    (("run", "matrix"), ["--rate", "1e9", "--duration", "3s"], ["--rate", "20,000"]),  # ran 69 s
    (("run", "matrix"), ["--rate", "nan"], ["--rate", "finite"]),
    (("run", "matrix", "capacity"), ["--db-capacity", "99999999999999999999"], ["--db-capacity", "1024"]),
    (("run", "capacity"), ["--rows", "99999999999999999999"], ["--rows", "10,000,000"]),
    (("run", "capacity"), ["--alpha", "nan"], ["--alpha", "finite"]),
    (("run", "matrix", "capacity"), ["--celebrity-share", "inf"], ["--celebrity-share", "finite"]),
    (("run",), ["--shape", "step", "--shape-args", "steps=1e30", "--rate", "10"], ["--shape-args", "1000"]),
    (("capacity",), ["--max-rate", "nan"], ["--max-rate", "20,000"]),
    (("capacity",), ["--max-rate", "1e9"], ["--max-rate", "20,000"]),
    (("capacity",), ["--hold", "9999999h"], ["--steps x --hold", "24h"]),
]


@pytest.mark.parametrize("command, extra, words",
                         [pytest.param(c, extra, words, id=f"{c} {' '.join(extra)[:50]}")
                          for commands, extra, words in BAD_VALUES for c in commands])
def test_bad_values_are_refused_before_anything_starts(command, extra, words, in_process, tmp_path):
    refused_up_front(in_process, tmp_path, [*LOAD_COMMANDS[command], *extra], words)


def test_an_experiment_whose_run_section_sets_a_bad_value_is_refused_up_front(in_process, tmp_path):
    (tmp_path / "exp.yaml").write_text("name: x\nmethod:\n  - {fault: redis-latency, at: 1s, for: 2s}\n"
                                       "run: {ttl: 0s, users: 99999999}\n")
    refused_up_front(in_process, tmp_path, ["run", "--experiment", str(tmp_path / "exp.yaml")], ["--users"])


@pytest.mark.parametrize("args, words", [
    (("chaos", "apply", "redis-latency", "--set", "latency_ms=1e400"), ("latency_ms", "finite")),  # OverflowError
    (("chaos", "apply", "redis-latency", "--set", "latency_ms=-5"), ("latency_ms", "negative")),
    (("chaos", "apply", "redis-latency", "--for", "0"), ("--for", "more than 0s")),  # ran a fault of 0 s
    (("chaos", "apply", "redis-latency", "--for", "99999999h"), ("--for", "24h")),
    (("chaos", "run", "hot-key-expiry", "--at", "99999999h"), ("first fault", "24h")),
])
def test_chaos_values_are_refused_before_anything_is_touched(args, words, in_process, tmp_path):
    # without a stack: the value must be refused first, not "no stack is up"
    refused_up_front(in_process, tmp_path, list(args), words)


# every path argument of every command, given what it cannot use
LONG_NAME = "x" * 300
LONG_PATH = "/tmp/" + "/".join(["y" * 200] * 25)


def _bad_paths(tmp_path: Path) -> dict[str, dict[str, str]]:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    file, folder = str(tmp_path / "a-file"), str(tmp_path / "a-folder")
    return {
        "output file": {"a folder": folder, "missing parent": "/nonexistent/dir/out.txt", "unwritable": "/proc/out.txt",
                        "long name": LONG_NAME, "long path": LONG_PATH, "under a file": file + "/out.txt"},
        "output folder": {"a file": file, "unwritable": "/proc/x/runs", "long name": LONG_NAME,
                          "long path": LONG_PATH, "under a file": file + "/runs"},
        "input": {"a folder": folder, "missing": "/nonexistent/x.yaml", "long name": LONG_NAME + ".yaml",
                  "long path": LONG_PATH + ".yaml", "under a file": file + "/x.yaml", "not YAML": file},
    }


def _path_arguments(run_dir: str, config: str) -> list[tuple[str, list[str]]]:
    """(kind, argv with {} for the path) of every path argument (chaos --ledger/--run-dir: test_chaos_cli)."""
    outputs = [[*LOAD_COMMANDS[c], "--out", "{}"] for c in LOAD_COMMANDS] + [
        ["report", run_dir, run_dir, "--out", "{}"], ["bench", "incident", "--out", "{}"]]
    inputs = [["run", "--experiment", "{}"], ["matrix", "--strategies", "cache-aside", "--experiments", "{}"],
              ["chaos", "run", "{}"], ["gate", run_dir, "-c", "{}"], ["gate", "{}", "-c", config], ["report", "{}"],
              ["compare", "{}", run_dir], ["compare", run_dir, "{}"], ["proxy", "serve", "--config", "{}"],
              ["run", "--rate", "10", "--shape", "{}"]]
    files = [["gate", run_dir, "-c", config, "--junit", "{}"], ["gate", run_dir, "-c", config, "--markdown", "{}"]]
    return ([("output folder", a) for a in outputs] + [("input", a) for a in inputs]
            + [("output file", a) for a in files])


def test_no_path_argument_of_any_command_tracebacks(in_process, tmp_path):
    from cachestorm.reports.synthetic import write_synthetic_run

    run_dir = str(write_synthetic_run(tmp_path / "r1") or tmp_path / "r1")
    config = tmp_path / "gate.yaml"
    config.write_text("slos:\n  - metric: p99_ms\n    max: 5000\n")
    bad = _bad_paths(tmp_path)
    tried = 0
    for kind, argv in _path_arguments(run_dir, str(config)):
        for what, path in bad[kind].items():
            code, lines, seconds = in_process(*[path if part == "{}" else part for part in argv])
            assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, what, code, lines)
            assert not (tmp_path / ".cachestorm" / "stack.json").exists() and seconds < 10, (argv, what)
            tried += 1
    assert tried == 6 * 5 + 10 * 6 + 2 * 6


def test_report_checks_its_out_before_rendering(in_process, tmp_path):
    """A bad --out of `report` failed only after every run's report was rendered."""
    from cachestorm.reports.synthetic import write_synthetic_run

    run_dir = tmp_path / "r1"
    write_synthetic_run(run_dir)
    (tmp_path / "a-file").write_text("x")
    code, lines, _ = in_process("report", str(run_dir), str(run_dir), "--out", str(tmp_path / "a-file"))
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --out "), lines
    assert not (run_dir / "report.html").exists()
