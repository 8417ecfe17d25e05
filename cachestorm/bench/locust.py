"""`cachestorm bench locust`: requests/s of cachestorm's Locust user vs a bare FastHttpUser.

Both hit the same fast server (locustfiles/stub_server.py, raw asyncio, so the server is not the
bottleneck) in one run, alternating: bare, cachestorm, bare, cachestorm, each a separate Locust
subprocess of the same duration and user count; the ratio is the median of the paired rounds. cachestorm's user draws Zipf keys (10k ids,
alpha 0.99) for GET /profiles/{id} with histories and per-second HDR recording on; the bare user GETs
/profiles/1. A third variant records every key's history, to show what recording costs. Goal >= 0.9x.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cachestorm.errors import CachestormError

REPO = Path(__file__).resolve().parents[2]
GOAL = 0.9
USERS = 10
BARE_LOCUSTFILE = '''
from locust import FastHttpUser, constant, task


class BareUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self):
        self.client.get("/profiles/1")
'''


def locust_rps(locustfile: Path, host: str, seconds: int, workdir: Path, *extra: str) -> float:
    """Run Locust headless; requests/s over the whole run from its JSON statistics."""
    stats = workdir / f"stats-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(USERS), "-r", str(USERS),
               "-t", f"{seconds}s", "--host", host, "--only-summary", "--loglevel", "WARNING",
               "--json-file", str(stats), *extra]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, cwd=REPO, env=env)
    if done.returncode not in (0, 1):
        raise CachestormError(f"locust failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    entries = json.loads(Path(f"{stats}.json").read_text())
    requests = sum(e["num_requests"] for e in entries)
    failures = sum(e["num_failures"] for e in entries)
    if requests == 0 or failures > requests * 0.01:
        raise CachestormError(f"locust run had {requests} requests, {failures} failures: is the server up?")
    start = min(e["start_time"] for e in entries)
    end = max(e["last_request_timestamp"] for e in entries)
    return requests / max(end - start, 1e-9)


def history_line_cost_ns(lines: int = 200_000) -> float:
    """Cost of one buffered history line (format + write), measured in this process."""
    from locustfiles.recording import HistoryWriter

    with tempfile.TemporaryDirectory() as tmp:
        writer = HistoryWriter(Path(tmp), "bench")
        begin = time.perf_counter_ns()
        for i in range(lines):
            writer.record(i % 1000, "read", 1_000_000 + i, 1_000_500 + i, 1_795_000_000.123456, 200, 7, "hit", "",
                          f"w0-1-{i}", "", 1)
        writer.close()
        return (time.perf_counter_ns() - begin) / lines


def main(seconds: int = 15, rounds: int = 3) -> dict:
    from locustfiles.stub_server import StubProcess

    results: dict[str, list[float]] = {"bare": [], "cachestorm": [], "cachestorm_all_histories": []}
    with tempfile.TemporaryDirectory() as tmp, StubProcess("--keys", "10000") as server:
        workdir = Path(tmp)
        bare = workdir / "bare_locustfile.py"
        bare.write_text(BARE_LOCUSTFILE)
        ours = REPO / "locustfiles" / "profiles.py"
        common = ["--keys", "10000", "--alpha", "0.99", "--write-ratio", "0", "--seed", "1"]
        for round_index in range(rounds):
            results["bare"].append(locust_rps(bare, server.url, seconds, workdir))
            run_dir = workdir / f"run-{round_index}"
            results["cachestorm"].append(locust_rps(ours, server.url, seconds, workdir, "--run-dir", str(run_dir),
                                                    "--history-sample", "0.01", *common))
            print(f"round {round_index + 1}: bare {results['bare'][-1]:,.0f} req/s, "
                  f"cachestorm {results['cachestorm'][-1]:,.0f} req/s", flush=True)
        run_dir = workdir / "run-all"
        results["cachestorm_all_histories"].append(locust_rps(ours, server.url, seconds, workdir, "--run-dir", str(run_dir),
                                                              "--history-sample", "1.0", *common))
        history_lines = sum(1 for p in (run_dir / "histories").glob("*.tsv") for _ in p.open()) - 2
    bare_rps = statistics.median(results["bare"])
    ours_rps = statistics.median(results["cachestorm"])
    all_rps = results["cachestorm_all_histories"][0]
    line_ns = history_line_cost_ns()
    # paired: each round's cachestorm run against the bare run just before it (the machine is shared)
    ratio = statistics.median(o / b for o, b in zip(results["cachestorm"], results["bare"], strict=True))
    print(f"\nLocust FastHttpUser, {USERS} users, {seconds} s per run, {rounds} alternating rounds (medians; ratio = median of paired rounds):")
    print(f"  bare FastHttpUser GET /profiles/1           {bare_rps:10,.0f} req/s")
    print(f"  cachestorm user (Zipf keys, 1% histories)    {ours_rps:10,.0f} req/s   ratio {ratio:.2f}x (goal >= {GOAL}x)")
    print(f"  cachestorm user, every key's history         {all_rps:10,.0f} req/s   ratio {all_rps / bare_rps:.2f}x "
          f"({history_lines:,} history lines)")
    print(f"  one buffered history line costs {line_ns:,.0f} ns ({line_ns / (1e9 / bare_rps) * 100:.1f}% of a request's "
          f"time at the bare rate)")
    print(f"result: {'PASS' if ratio >= GOAL else 'BELOW GOAL'}")
    return {"bare_rps": bare_rps, "cachestorm_rps": ours_rps, "all_histories_rps": all_rps, "ratio": ratio,
            "history_line_ns": line_ns}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
