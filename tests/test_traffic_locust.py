"""Real Locust runs as subprocesses against a real HTTP server (the stub in locustfiles/stub_server.py,
which follows design.md's target API): files produced and parseable, --processes 2 merged, open-model
rate, retries recorded per attempt, bad options exit 2 with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from cachestorm.traffic.recording import read_history
from cachestorm.traffic.stub_server import StubProcess
from hdrh.histogram import HdrHistogram

REPO = Path(__file__).resolve().parent.parent
LOCUST = str(Path(sys.executable).parent / "locust")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    with StubProcess("--keys", "1000") as stub:
        yield stub


def run_locust(domain: str, host: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [LOCUST, "-f", str(REPO / "locustfiles" / f"{domain}.py"), "--headless", "--host", host, "--only-summary", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
    )


def latency_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_closed_model_writes_histories_and_latency(server, tmp_path):
    result = run_locust("profiles", server.url, "-u", "5", "-r", "5", "-t", "4s", "--run-dir", str(tmp_path),
                        "--keys", "1000", "--hot-keys", "5", "--history-sample", "0.02", "--celebrity-share", "0.2",
                        "--seed", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    histories = list((tmp_path / "histories").glob("*.tsv"))
    assert len(histories) == 1
    rows = read_history(histories[0])
    assert len(rows) > 200
    ops = Counter(r["op"] for r in rows)
    assert set(ops) == {"read", "write"} and ops["write"] < ops["read"]
    keys = Counter(int(r["key"]) for r in rows)
    assert set(range(1, 6)) <= set(keys) and keys.most_common(1)[0][0] == 1  # hot keys always; celebrity id 1 first
    assert all(r["attempt"] == "1" and r["status"] == "200" and r["version"] for r in rows)
    assert {r["source"] for r in rows if r["op"] == "read"} <= {"hit", "miss"} and all(r["source"] == "" for r in rows if r["op"] == "write")
    assert all(int(r["end_ns"]) >= int(r["start_ns"]) for r in rows)
    worker_files = [p for p in (tmp_path / "latency").glob("*.jsonl") if p.name != "merged.jsonl"]
    assert len(worker_files) == 1
    merged = latency_lines(tmp_path / "latency" / "merged.jsonl")
    assert {line["kind"] for line in merged} == {"read", "write", "all"}
    requests = sum(line.get("counts", {}).get("requests", 0) for line in merged)
    hdr_total = sum(HdrHistogram.decode(line["hist"]).get_total_count() for line in merged if line["kind"] == "all")
    assert requests == hdr_total > 1000
    process_total = int(result.stderr.split('"requests": ')[1].split("}")[0].split(",")[0])
    assert process_total == requests  # the process summary printed at test stop agrees with the files


def test_processes_2_are_merged_exactly(server, tmp_path):
    result = run_locust("catalog", server.url, "--processes", "2", "-u", "4", "-r", "4", "-t", "4s",
                        "--run-dir", str(tmp_path), "--seed", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    workers = [p for p in (tmp_path / "latency").glob("*.jsonl") if p.name != "merged.jsonl"]
    assert len(workers) == 2 and all(p.name.startswith("w") for p in workers)
    assert len(list((tmp_path / "histories").glob("w*.tsv"))) == 2

    def total(lines):
        return sum(HdrHistogram.decode(x["hist"]).get_total_count() for x in lines if x["kind"] == "all")

    per_worker = sum(total(latency_lines(p)) for p in workers)
    merged = latency_lines(tmp_path / "latency" / "merged.jsonl")
    assert per_worker == total(merged) > 500
    assert len({x["wall"] for x in merged}) == len([x for x in merged if x["kind"] == "all"])  # one line per second


def test_open_model_rate_is_accurate(server, tmp_path):
    rate = 300
    result = run_locust("profiles", server.url, "-u", "1", "-r", "1", "-t", "6s", "--rate", str(rate),
                        "--run-dir", str(tmp_path), "--seed", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [x for x in latency_lines(tmp_path / "latency" / "merged.jsonl") if x["kind"] == "all"]
    sent = [x["counts"].get("sent", 0) for x in sorted(lines, key=lambda x: x["wall"])]
    full_seconds = sent[1:-1]  # the first and last seconds are partial
    assert len(full_seconds) >= 3
    achieved = sum(full_seconds) / len(full_seconds)
    assert achieved == pytest.approx(rate, rel=0.02), sent
    assert "send_lag" in {x["kind"] for x in latency_lines(tmp_path / "latency" / "merged.jsonl")}


def test_naive_retries_are_recorded_per_attempt(tmp_path):
    with StubProcess("--error-share", "0.5") as flaky:
        result = run_locust("counters", flaky.url, "-u", "2", "-r", "2", "-t", "3s", "--run-dir", str(tmp_path),
                            "--retry", "naive:2", "--keys", "20", "--hot-keys", "20", "--seed", "4")
    assert result.returncode in (0, 1), result.stderr[-2000:]  # 503s are Locust failures (exit 1)
    rows = read_history(next((tmp_path / "histories").glob("*.tsv")))
    by_request: dict[str, list[dict]] = {}
    for row in rows:
        by_request.setdefault(row["request_id"], []).append(row)
    attempts = Counter(len(v) for v in by_request.values())
    assert set(attempts) == {1, 2, 3}  # 0.5 failure rate: retried once and twice, never a 4th attempt
    for lines in by_request.values():
        assert [int(r["attempt"]) for r in lines] == list(range(1, len(lines) + 1))
        assert all(r["status"] == "503" for r in lines[:-1])
    incr = [r for r in rows if r["op"] == "incr"]
    assert incr and all(r["value"] in {"1", "2", "3", "4", "5"} for r in incr)
    assert "cachestorm counters flush" in result.stderr
    mean = sum(len(v) for v in by_request.values()) / len(by_request)
    assert mean == pytest.approx(1.75, abs=0.1)  # 1 + 0.5 + 0.25 expected attempts per request


@pytest.mark.parametrize("option, value", [("--alpha", "0"), ("--shape", "zigzag"), ("--preset", "nope")])
def test_bad_option_exits_2_with_one_line(server, option, value):
    result = run_locust("permissions", server.url, "-u", "1", "-t", "2s", option, value, timeout=30)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and option in errors[0]


def test_open_model_step_shape_steps_the_rate_and_ends_the_test(server, tmp_path):
    # no -t: the step shape ends the run after 2 x 3 s; the rate goes 100/s then 200/s
    result = run_locust("profiles", server.url, "-u", "1", "-r", "1", "--rate", "200", "--shape", "step",
                        "--shape-args", "steps=2,hold=3", "--run-dir", str(tmp_path), timeout=40)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = sorted((x for x in latency_lines(tmp_path / "latency" / "merged.jsonl") if x["kind"] == "all"),
                   key=lambda x: x["wall"])
    sent = [x["counts"].get("sent", 0) for x in lines]
    assert 5 <= len(sent) <= 8, sent
    assert sum(sent) == pytest.approx(100 * 3 + 200 * 3, rel=0.08), sent
    assert max(sent[:2]) <= 110 and max(sent[-3:]) >= 180, sent


def test_closed_model_step_shape_changes_users(server, tmp_path):
    result = run_locust("catalog", server.url, "-u", "4", "-r", "100", "--shape", "step", "--shape-args",
                        "steps=2,hold=2", "--think-time", "0.1", "--run-dir", str(tmp_path), timeout=40)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "updating to 2 users" in result.stderr and "updating to 4 users" in result.stderr


def test_shape_classes_for_your_own_locustfile(server, tmp_path):
    locustfile = tmp_path / "mine.py"
    locustfile.write_text(
        "from locust import FastHttpUser, constant, task\n"
        "from locustfiles.models.shapes import Step\n"
        "from locustfiles.shapes import StepShape\n\n"
        "class Capacity(StepShape):\n    users = 4\n    model = Step(steps=2, hold=1.5)\n\n"
        "class U(FastHttpUser):\n    wait_time = constant(0.1)\n\n"
        "    @task\n    def t(self):\n        self.client.get('/profiles/1')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([LOCUST, "-f", str(locustfile), "--headless", "--host", server.url, "--only-summary"],
                            capture_output=True, text=True, timeout=30, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-1500:]
    assert "updating to 2 users" in result.stderr and "updating to 4 users" in result.stderr
    assert "Shape test stopping" in result.stderr


OPEN_MODEL_BASE = r"""
import time
from types import SimpleNamespace

from cachestorm.traffic import common
from cachestorm.traffic.models.retry import build_retry

recorded = {}


class Recorder:
    def record(self, kind, micros, wall=None):
        recorded.setdefault(kind, []).append(micros)

    def count(self, name, n=1, wall=None):
        pass

    def request_done(self, kind, micros, attempts, wall):
        recorded.setdefault("done", []).append(micros)


def send(*args):
    time.sleep(0.05)
    return 200, "1", "hit", None


common.Process.settings = SimpleNamespace(retry=build_retry("none"), late_ns=2_000_000)
common.Process.latency, common.Process.history = Recorder(), None
intended = time.monotonic_ns() - 400_000_000  # this arrival was due 400 ms ago (a stalled sender)
common.CachestormUser.call(SimpleNamespace(_send=send), "read", 1, "GET", "/profiles/1", "read", intended)
common.CachestormUser.call(SimpleNamespace(_send=send), "read", 1, "GET", "/profiles/1", "read", None)
print(recorded["done"][0] / 1000, recorded["done"][1] / 1000, recorded["send_lag"][0] / 1000)
"""


def test_open_model_latency_counts_from_the_intended_send_time():
    """Coordinated omission: an arrival sent late is as slow as its intended time says (400 ms lag +
    50 ms service), not only its own 50 ms; the closed model counts from the first attempt. Locust
    patches the stdlib on import, so this runs in its own process."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", OPEN_MODEL_BASE], capture_output=True, text=True, timeout=60,
                            cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    open_ms, closed_ms, lag_ms = map(float, result.stdout.split())
    assert open_ms >= 440 and lag_ms >= 390, (open_ms, lag_ms)
    assert 45 <= closed_ms < 400, closed_ms


def test_timeouts_are_their_own_kind_and_are_retried(tmp_path):
    """A server slower than --request-timeout: every attempt is a `timeout` (not a 5xx), naive:2
    retries it twice, and the per-second counts carry the timeouts of every request."""
    with StubProcess("--delay-ms", "400") as slow:
        result = run_locust("profiles", slow.url, "-u", "2", "-r", "2", "-t", "4s", "--run-dir", str(tmp_path),
                            "--retry", "naive:2", "--request-timeout", "0.1", "--keys", "20", "--hot-keys", "20",
                            "--seed", "3", "--write-ratio", "0")
    assert result.returncode in (0, 1), result.stderr[-2000:]
    rows = read_history(next((tmp_path / "histories").glob("*.tsv")))
    statuses = Counter(r["status"] for r in rows)
    # (a rare 200: a late answer read off a reused connection, geventhttpclient's doing)
    assert statuses["timeout"] >= 0.9 * len(rows) and not any(s.startswith("5") for s in statuses), statuses
    attempts = Counter(Counter(r["request_id"] for r in rows).values())
    # the first attempt and two retries, each recorded (a request cut off by the test's end: fewer)
    assert max(attempts) == 3 and attempts[3] >= 0.8 * sum(attempts.values()), attempts
    counts = Counter()
    for line in latency_lines(tmp_path / "latency" / "merged.jsonl"):
        counts.update(line.get("counts") or {})
    assert counts["requests_started"] > 0 and counts["server_errors"] == 0
    assert counts["attempts_started"] >= 2.5 * counts["requests_started"]
    assert counts["timeouts"] >= 0.9 * counts["attempts_started"]
