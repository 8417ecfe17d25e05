"""Real Locust runs against the stub server (a real HTTP server): the open-model schedule ends at -t,
a locustfile that raises fails the process, and the web UI's START (POST /swarm) with every custom
option starts users that send requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cachestorm.traffic.settings import ARGUMENTS, option_name
from cachestorm.traffic.stub_server import StubProcess, free_port

REPO = Path(__file__).resolve().parent.parent
LOCUST = str(Path(sys.executable).parent / "locust")
ENV = dict(os.environ, PYTHONPATH=str(REPO))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    with StubProcess("--keys", "1000") as stub:
        yield stub


def test_open_model_stops_sending_at_the_run_time(server, tmp_path):
    """Locust applies -t then lets users run on for --stop-timeout: the arrival schedule must end at -t."""
    rate, seconds = 100, 3
    result = subprocess.run(
        [LOCUST, "-f", str(REPO / "locustfiles" / "profiles.py"), "--headless", "--host", server.url,
         "--only-summary", "-u", "1", "-r", "1", "-t", f"{seconds}s", "--stop-timeout", "5", "--rate", str(rate),
         "--run-dir", str(tmp_path), "--seed", "5"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(x) for x in (tmp_path / "latency" / "merged.jsonl").read_text().splitlines()]
    sent = sum(x["counts"].get("sent", 0) for x in lines if x["kind"] == "all")
    assert rate * seconds * 0.8 <= sent <= rate * seconds * 1.1 + 5, sent  # not 5 s more of it (--stop-timeout)
    walls = [x["wall"] for x in lines if x["kind"] == "all" and x["counts"].get("sent")]
    assert max(walls) - min(walls) <= seconds, walls  # per-second lines: sends span -t, not -t + 5 s


def test_a_locustfile_that_raises_exits_non_zero_even_when_failed_requests_do_not(server, tmp_path):
    locustfile = tmp_path / "broken.py"
    locustfile.write_text(
        "from locustfiles.common import CachestormShape, CachestormUser, Process\n\n"
        "Process.domain = 'profiles'\n__all__ = ['Broken', 'CachestormShape']\n\n"
        "class Broken(CachestormUser):\n"
        "    def perform(self, op, key, intended_ns):\n"
        "        raise RuntimeError('a bug in the locustfile')\n")
    result = subprocess.run(
        [LOCUST, "-f", str(locustfile), "--headless", "--host", server.url, "--only-summary", "-u", "1", "-r", "1",
         "-t", "2s", "--exit-code-on-error", "0"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=ENV)
    assert result.returncode == 3, result.stderr[-2000:]


# a valid, non-default value for every custom option, as the web UI's form sends them: text
WEB_FORM = {"--run-dir": None, "--hosts": None, "--preset": "", "--key-model": "zipf", "--alpha": "1.21",
            "--keys": "500", "--hot-keys": "5", "--hot-fraction": "0.3", "--hot-op-fraction": "0.7",
            "--celebrity-share": "0.1", "--missing-share": "0.05", "--write-ratio": "0.2",
            "--delete-ratio": "0.05", "--owner-read-share": "0.1", "--value-size": "fixed:100", "--rate": "0",
            "--arrivals": "poisson", "--max-inflight": "50", "--open-users": "0", "--late-ms": "3",
            "--shape": "", "--shape-args": "", "--retry": "naive:1", "--history-sample": "0.05", "--seed": "7",
            "--request-timeout": "5", "--think-time": "0.01,0.02"}


def test_web_ui_start_with_every_custom_field_spawns_users_that_send_requests(server, tmp_path):
    assert set(WEB_FORM) == {flag for flag, *_ in ARGUMENTS}  # a new option gets a value here too
    form = {option_name(flag): value for flag, value in WEB_FORM.items()}
    form |= {"run_dir": str(tmp_path), "hosts": server.url, "user_count": "3", "spawn_rate": "3",
             "host": server.url}
    port = free_port()
    log = (tmp_path / "locust.log").open("w")
    locust = subprocess.Popen(
        [LOCUST, "-f", str(REPO / "locustfiles" / "profiles.py"), "--web-host", "127.0.0.1", "--web-port", str(port),
         "--host", server.url], stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=ENV)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert locust.poll() is None, (tmp_path / "locust.log").read_text()[-2000:]
            try:
                if httpx.get(base + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the web UI never answered"
            time.sleep(0.2)
        # a bad value from the form stops that start, not Locust: the UI stays up for a corrected one
        httpx.post(base + "/swarm", data=form | {"alpha": "abc"}, timeout=10)
        deadline = time.monotonic() + 20
        while "cannot start: --alpha must be a number (got 'abc')" not in (tmp_path / "locust.log").read_text():
            assert locust.poll() is None, "Locust died: " + (tmp_path / "locust.log").read_text()[-2000:]
            assert time.monotonic() < deadline, (tmp_path / "locust.log").read_text()[-2000:]
            time.sleep(0.2)
        while httpx.get(base + "/stats/requests", timeout=5).json().get("state") not in ("stopped", "ready"):
            assert time.monotonic() < deadline, "the bad start did not stop"
            time.sleep(0.2)
        answer = httpx.post(base + "/swarm", data=form, timeout=10)
        assert answer.status_code == 200 and answer.json()["success"], answer.text
        deadline = time.monotonic() + 30
        stats = {}
        while time.monotonic() < deadline:
            try:
                stats = httpx.get(base + "/stats/requests", timeout=5).json()
            except httpx.HTTPError:
                assert locust.poll() is None, "Locust died: " + (tmp_path / "locust.log").read_text()[-2000:]
                raise
            total = next((s for s in stats["stats"] if s["name"] == "Aggregated"), {})
            if stats.get("user_count", 0) >= 1 and total.get("num_requests", 0) > 50:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"no users or requests after START: {stats} {(tmp_path / 'locust.log').read_text()[-2000:]}")
        names = {s["name"] for s in stats["stats"]}
        assert {"/profiles/[id]", "/profiles/[id] owner"} <= names  # owner_read_share took effect
        methods = {s["method"] for s in stats["stats"] if s.get("method")}
        assert {"GET", "PUT", "DELETE"} <= methods  # write_ratio and delete_ratio took effect
        httpx.get(base + "/stop", timeout=10)
    finally:
        locust.send_signal(signal.SIGINT)
        try:
            locust.wait(timeout=20)
        except subprocess.TimeoutExpired:
            locust.kill()
            locust.wait()
        log.close()
    assert list((tmp_path / "histories").glob("*.tsv"))  # the run folder given in the form was used
