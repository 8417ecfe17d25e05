"""`cachestorm bench locust`: requests/s of cachestorm's Locust user vs a bare FastHttpUser.

Both hit the same fast server (locustfiles/stub_server.py, raw asyncio, so the server is not the
bottleneck) in one run, alternating: bare, cachestorm, bare, cachestorm, each a separate Locust
subprocess of the same duration and user count; the ratio is the median of the paired rounds. cachestorm's user draws Zipf keys (10k ids,
alpha 0.99) for GET /profiles/{id} with histories and per-second HDR recording on; the bare user GETs
/profiles/{uniform random id} (the same endpoint, minimal code). A third variant records every key's history, to show what recording costs. Goal >= 0.9x.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cachestorm.core.errors import CachestormError
from cachestorm.core.runfolder import RunFolder
from cachestorm.traffic import locustfile

REPO = Path(__file__).resolve().parents[2]
GOAL = 0.9
USERS = 10
BARE_LOCUSTFILE = '''
import random

from locust import FastHttpUser, constant, task


class BareUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self):
        self.client.get(f"/profiles/{random.randint(1, 10000)}", name="/profiles/[id]")
'''


# Loaded next to either locustfile (`-f a.py,sidecar.py`): every 0.25 s it notes (wall, requests so
# far, this process's CPU seconds), so CPU per request is measured in the steady state, startup excluded.
SIDECAR = '''
import os, resource, time
import gevent
from locust import events


@events.test_start.add_listener
def _start(environment, **_kw):
    def sample():
        with open(os.environ["CACHESTORM_BENCH_SAMPLES"], "w", buffering=1) as out:
            while True:
                usage = resource.getrusage(resource.RUSAGE_SELF)
                total = environment.runner.stats.total.num_requests
                out.write(f"{time.time()} {total} {usage.ru_utime + usage.ru_stime}\\n")
                gevent.sleep(0.25)
    gevent.spawn(sample)
'''


@dataclass
class Run:
    rps: float  # over the steady window
    cpu_us_per_request: float  # Locust process CPU (user + system) per request over the steady window


def locust_rps(locustfile: Path, host: str, seconds: int, workdir: Path, *extra: str) -> Run:
    """Run Locust headless; requests/s and CPU µs per request between 2 s in and 0.5 s before the end."""
    samples_path = workdir / f"samples-{time.monotonic_ns()}.txt"
    sidecar = workdir / "bench_sidecar.py"
    sidecar.write_text(SIDECAR)
    command = [sys.executable, "-m", "locust", "-f", f"{locustfile},{sidecar}", "--headless", "-u", str(USERS),
               "-r", str(USERS), "-t", f"{seconds}s", "--host", host, "--only-summary", "--loglevel", "WARNING", *extra]
    env = dict(os.environ, CACHESTORM_BENCH_SAMPLES=str(samples_path))
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, cwd=REPO, env=env)
    if done.returncode not in (0, 1):
        raise CachestormError(f"locust failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    rows = [tuple(map(float, line.split())) for line in samples_path.read_text().splitlines() if line.count(" ") == 2]
    if len(rows) < 4:
        raise CachestormError(f"locust ran too briefly to measure ({len(rows)} samples); use more seconds")
    start, end = rows[0][0] + 2.0, rows[-1][0] - 0.5
    window = [r for r in rows if start <= r[0] <= end] or rows[len(rows) // 2 - 1 : len(rows) // 2 + 1]
    (t1, n1, c1), (t2, n2, c2) = window[0], window[-1]
    requests = n2 - n1
    if requests <= 0:
        raise CachestormError("no requests in the measuring window: is the server up?")
    return Run(requests / (t2 - t1), (c2 - c1) * 1e6 / requests)


def history_line_cost_ns(lines: int = 200_000) -> float:
    """Cost of one buffered history line (format + write), measured in this process."""
    from cachestorm.traffic.recording import HistoryWriter

    with tempfile.TemporaryDirectory() as tmp:
        writer = HistoryWriter(Path(tmp), "bench")
        begin = time.perf_counter_ns()
        for i in range(lines):
            writer.record(i % 1000, "read", 1_000_000 + i, 1_000_500 + i, 1_795_000_000.123456, 200, 7, "hit", "",
                          f"w0-1-{i}", "", 1)
        writer.close()
        return (time.perf_counter_ns() - begin) / lines


def main(seconds: int = 15, rounds: int = 3) -> dict:
    from cachestorm.traffic.stub_server import StubProcess

    results: dict[str, list[Run]] = {"bare": [], "cachestorm": [], "all_histories": []}
    with tempfile.TemporaryDirectory() as tmp, StubProcess("--keys", "10000") as server:
        workdir = Path(tmp)
        bare = workdir / "bare_locustfile.py"
        bare.write_text(BARE_LOCUSTFILE)
        ours = locustfile("profiles")
        common = ["--keys", "10000", "--alpha", "0.99", "--write-ratio", "0", "--seed", "1"]
        for round_index in range(rounds):
            results["bare"].append(locust_rps(bare, server.url, seconds, workdir))
            run_dir = workdir / f"run-{round_index}"
            results["cachestorm"].append(locust_rps(ours, server.url, seconds, workdir, "--run-dir", str(run_dir),
                                                    "--history-sample", "0.01", *common))
            b, o = results["bare"][-1], results["cachestorm"][-1]
            print(f"round {round_index + 1}: bare {b.rps:,.0f} req/s ({b.cpu_us_per_request:.0f} µs CPU/req), "
                  f"cachestorm {o.rps:,.0f} req/s ({o.cpu_us_per_request:.0f} µs CPU/req)", flush=True)
        run_dir = workdir / "run-all"
        results["all_histories"].append(locust_rps(ours, server.url, seconds, workdir, "--run-dir", str(run_dir),
                                                   "--history-sample", "1.0", *common))
        history_lines = sum(1 for p in RunFolder(run_dir).history_files() for _ in p.open()) - 2
    pairs = list(zip(results["cachestorm"], results["bare"], strict=True))
    # paired: each round's cachestorm run against the bare run just before it (the machine is shared)
    rps_ratio = statistics.median(o.rps / b.rps for o, b in pairs)
    cpu_ratio = statistics.median(b.cpu_us_per_request / o.cpu_us_per_request for o, b in pairs)
    bare_cpu = statistics.median(b.cpu_us_per_request for b in results["bare"])
    ours_cpu = statistics.median(o.cpu_us_per_request for o in results["cachestorm"])
    all_run = results["all_histories"][0]
    line_ns = history_line_cost_ns()
    print(f"\nLocust FastHttpUser, {USERS} users, {seconds} s per run, {rounds} alternating rounds "
          "(medians; ratios are medians of the paired rounds):")
    print(f"  bare FastHttpUser GET /profiles/{{id}}     {statistics.median(b.rps for b in results['bare']):8,.0f} req/s "
          f"{bare_cpu:6.0f} µs CPU/req")
    print(f"  cachestorm user (Zipf keys, 1% histories)   {statistics.median(o.rps for o in results['cachestorm']):8,.0f} req/s "
          f"{ours_cpu:6.0f} µs CPU/req")
    print(f"  cachestorm user, every key's history        {all_run.rps:8,.0f} req/s {all_run.cpu_us_per_request:6.0f} µs CPU/req "
          f"({history_lines:,} history lines)")
    print(f"  speed ratio (requests per CPU second, less load-sensitive): {cpu_ratio:.2f}x (goal >= {GOAL}x)")
    print(f"  throughput ratio (req/s, paired rounds, shared machine):      {rps_ratio:.2f}x")
    print(f"  one buffered history line costs {line_ns:,.0f} ns")
    print(f"result: {'PASS' if cpu_ratio >= GOAL else 'BELOW GOAL'}")
    return {"rps_ratio": rps_ratio, "cpu_ratio": cpu_ratio, "bare_cpu_us": bare_cpu, "cachestorm_cpu_us": ours_cpu,
            "all_histories_cpu_us": all_run.cpu_us_per_request, "history_line_ns": line_ns}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
