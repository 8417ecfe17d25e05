"""A real (short) run folder, each file corrupted in turn (binary, truncated, wrong types): `report`,
`gate` and `compare` print one line and exit 2, or succeed where the file is optional; never a
traceback, and the run folder's files are left as they were."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from unittest import mock

import pytest

CLI = [sys.executable, "-m", "cachestorm"]
OUTPUTS = {"report.html", "summary.md", "report.json"}  # what `report` (re)writes
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, cli_env_module) -> Path:
    base = tmp_path_factory.mktemp("fuzz")
    result = subprocess.run(
        CLI + ["run", "--strategy", "cache-aside", "--duration", "6s", "--users", "5", "--spawn-rate", "5",
               "--keys", "100", "--rows", "200", "--recompute", "5ms", "--experiment", "hot-key-expiry",
               "--experiment-at", "3s", "--out", str(base / "runs"), "--no-report"],
        cwd=base, env=cli_env_module, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    [run_dir] = list((base / "runs").iterdir())
    return run_dir


@pytest.fixture(scope="module")
def cli_env_module(tmp_path_factory):
    import os

    home = tmp_path_factory.mktemp("home")
    repo = Path(__file__).resolve().parent.parent
    return dict(os.environ, HOME=str(home), PYTHONPATH=str(repo), COLUMNS="200")


def _wrong_types(value):
    """Every leaf a value of another type: numbers become text, text becomes a list, lists a number."""
    if isinstance(value, dict):
        return {k: _wrong_types(v) for k, v in value.items()}
    if isinstance(value, list):
        return 7
    if isinstance(value, bool) or value is None:
        return "x"
    if isinstance(value, int | float):
        return "not a number"
    return [value]


BINARY = b"\x00\xff\xfe" + bytes(range(256)) * 4
UNREAD = (".log", ".done", ".html", ".md")  # files no report reads: binary only, to show they stay unread


def corruptions(path: Path) -> dict[str, bytes]:
    data = path.read_bytes()
    if path.suffix in UNREAD:
        return {"binary": BINARY}
    variants = {"binary": BINARY, "truncated": data[: len(data) // 2]}
    if path.suffix == ".json":
        try:
            variants["wrong types"] = json.dumps(_wrong_types(json.loads(data))).encode()
        except ValueError:
            pass
        variants["not an object"] = b"[1, 2, 3]"
    elif path.suffix == ".jsonl":
        lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        variants["wrong types"] = "".join(json.dumps(_wrong_types(x)) + "\n" for x in lines).encode()
    elif path.suffix in (".csv", ".tsv"):
        lines = data.decode().splitlines()
        sep = "," if path.suffix == ".csv" else "\t"
        garbage = [sep.join("garbage" for _ in line.split(sep)) for line in lines[1:]]
        variants["wrong types"] = "\n".join(lines[:1] + garbage).encode() + b"\n"
    if path.name == "merged.jsonl" or (path.parent.name == "latency" and path.suffix == ".jsonl"):
        lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        variants["bad base64"] = "".join(json.dumps({**x, "hist": "!!!not base64!!!"}) + "\n" for x in lines).encode()
    return variants


def _digests(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name not in OUTPUTS}


_APP: list = []


def _cli(*args: str) -> tuple[int, str, str]:
    """The CLI in this process (a subprocess each would take minutes over ~50 cases x 3 commands)."""
    from cachestorm.cli import main as cli

    out, err = io.StringIO(), io.StringIO()
    code = 0
    if not _APP:  # build once: build_app() registers every command again on each call
        _APP.append(cli.build_app())
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            mock.patch.object(sys, "argv", ["cachestorm", *args]), \
            mock.patch.object(cli, "build_app", lambda: _APP[0]), \
            mock.patch("cachestorm.core.interrupts.install"):  # keep pytest's own signal handlers
        try:
            cli.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001 - what the user would see as a traceback
            err.write("Traceback (most recent call last):\n" + traceback.format_exc())
            code = -1
    return code, out.getvalue(), err.getvalue()


def _check(code: int, stdout: str, stderr: str, what: str) -> None:
    assert "Traceback" not in stderr and "Traceback" not in stdout, (what, stderr[-3000:])
    assert code in (0, 1, 2), (what, code, stderr[-1000:])
    if code == 2:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (what, stderr[-1000:])


@pytest.fixture()
def analyses_once(monkeypatch):
    """report, gate and compare each analyse the same folder: analyse each content once (a copy each time),
    so ~50 cases x 3 commands take a minute, not ten."""
    import copy

    from cachestorm.reports import analysis as report_analysis
    from cachestorm.reports import render as report_render

    real, cache = report_analysis.analyze_run, {}

    def analyze_run(run_dir, **kwargs):
        key = (str(Path(run_dir).resolve()), tuple(sorted(_digests(Path(run_dir)).items())))
        if key not in cache:
            cache[key] = real(run_dir, **kwargs)
        return copy.deepcopy(cache[key])

    monkeypatch.setattr(report_analysis, "analyze_run", analyze_run)
    monkeypatch.setattr(report_render, "analyze_run", analyze_run)


def test_every_corrupted_file_gives_one_line_never_a_traceback(real_run, tmp_path, analyses_once):
    gate_config = tmp_path / "gate.yaml"
    gate_config.write_text("slos:\n  - {name: p99, metric: p99_ms, max: 100000}\n")
    baseline = tmp_path / "baseline"
    shutil.copytree(real_run, baseline)
    files = [p.relative_to(real_run) for p in sorted(real_run.rglob("*")) if p.is_file()]
    assert len(files) >= 12, files
    problems, cases = [], 0
    for relative in files:
        for kind, content in corruptions(real_run / relative).items():
            run_dir = tmp_path / "case"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            shutil.copytree(real_run, run_dir)
            (run_dir / relative).write_bytes(content)
            before = _digests(run_dir)
            for command in (["report", str(run_dir)], ["gate", str(run_dir), "-c", str(gate_config)],
                            ["compare", str(baseline), str(run_dir)]):
                try:
                    _check(*_cli(*command), f"{command[0]}: {relative} ({kind})")
                except AssertionError as exc:
                    problems.append(str(exc)[:600])
            if _digests(run_dir) != before:
                problems.append(f"{relative} ({kind}): a command changed the run folder's input files")
            cases += 1
    assert not problems, f"{len(problems)} of {cases * 3}:\n" + "\n".join(problems)
    assert cases >= 40
