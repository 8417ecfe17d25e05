"""`cachestorm bench open-model`: the open model holds its arrival rate, and a server stall shows.

1. Rate: an open-model run at a rate the server can serve; achieved arrivals/s (mean of the full
   seconds) against the target. Goal: within 2%.
2. Stall: the server process is paused (SIGSTOP) for 2 s, then resumed (SIGCONT), once in an
   open-model run and once in a closed-model run (5 users). The open model keeps sending during the
   pause and measures from the intended send time, so its HDR p99/max include the stall (max >= the
   pause); Locust's own statistics of the closed run barely notice it (5 users wait, nothing else
   is sent: coordinated omission). Both are printed.
Server: locustfiles/stub_server.py (fast, raw asyncio) as a child process.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cachestorm.core.errors import CachestormError
from cachestorm.core.runfiles import read_jsonl
from cachestorm.core.runfolder import RunFolder
from cachestorm.traffic import locustfile

REPO = Path(__file__).resolve().parents[2]
PAUSE_S = 2.0
RATE_GOAL = 0.02


def _locust(host: str, seconds: int, run_dir: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "locust", "-f", str(locustfile("profiles")), "--headless",
               "-t", f"{seconds}s", "--host", host, "--only-summary", "--loglevel", "WARNING",
               "--run-dir", str(run_dir), "--seed", "1", "--keys", "10000", *extra]
    log = open(run_dir.parent / f"{run_dir.name}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def _wait(process: subprocess.Popen, seconds: int, run_dir: Path) -> None:
    try:
        code = process.wait(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise CachestormError("locust did not finish in time") from None
    if code not in (0, 1):
        log = (run_dir.parent / f"{run_dir.name}.log").read_text()[-400:]
        raise CachestormError(f"locust exited {code}: {log}")


def _running_seconds(run_dir: Path) -> int:
    """Seconds of traffic recorded so far (lines of kind "all" written by the worker)."""
    count = 0
    for path in RunFolder(run_dir).worker_latency_files():
        count += sum(1 for line in path.read_text().splitlines() if '"kind": "all"' in line)
    return count


def _pause_server_after(pid: int, run_dir: Path, after_s: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while _running_seconds(run_dir) < after_s:
        if process.poll() is not None or time.monotonic() > deadline:
            raise CachestormError("the load did not start; see the locust log in the bench folder")
        time.sleep(0.05)  # poll interval while waiting for the recorded seconds
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(PAUSE_S)  # the stall itself
    finally:
        os.kill(pid, signal.SIGCONT)


def _merged(run_dir: Path) -> dict:
    from cachestorm.traffic.recording import merge_run

    return merge_run(run_dir)


def _sent_per_full_second(run_dir: Path) -> list[int]:
    lines = read_jsonl(RunFolder(run_dir).merged_latency_path)
    sent = [x.get("counts", {}).get("sent", 0) for x in sorted(lines, key=lambda x: x["wall"]) if x["kind"] == "all"]
    return sent[1:-1]  # the first and last seconds are partial


def _locust_closed_stats(csv_prefix: Path) -> tuple[float, float]:
    with open(f"{csv_prefix}_stats.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    return float(row["99%"]), float(row["Max Response Time"])


def main(rate: int = 500, seconds: int = 10) -> dict:
    from cachestorm.traffic.stub_server import StubProcess

    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp, StubProcess("--keys", "10000") as server:
        folder = Path(tmp)
        # 1. rate accuracy
        run_dir = folder / "rate"
        run_dir.mkdir()
        process = _locust(server.url, seconds, run_dir, "-u", "1", "-r", "1", "--rate", str(rate))
        _wait(process, seconds, run_dir)
        summary = _merged(run_dir)
        full = _sent_per_full_second(run_dir)
        achieved = sum(full) / max(len(full), 1)
        results["rate"] = {"target": rate, "achieved": achieved, "per_second": full,
                           "late": summary["counts"].get("late", 0), "dropped": summary["counts"].get("dropped", 0),
                           "send_lag": summary["kinds"].get("send_lag", {})}
        # 2. stall in the open model
        stall_rate = max(50, rate // 2)
        run_dir = folder / "open-stall"
        run_dir.mkdir()
        process = _locust(server.url, seconds, run_dir, "-u", "1", "-r", "1", "--rate", str(stall_rate))
        _pause_server_after(server.pid, run_dir, 3, process)
        _wait(process, seconds, run_dir)
        open_summary = _merged(run_dir)
        # 3. the same stall in a closed-model run: Locust's own statistics, and our HDR (from actual send)
        run_dir = folder / "closed-stall"
        run_dir.mkdir()
        process = _locust(server.url, seconds, run_dir, "-u", "5", "-r", "5", "--csv", str(folder / "closed"))
        _pause_server_after(server.pid, run_dir, 3, process)
        _wait(process, seconds, run_dir)
        closed_summary = _merged(run_dir)
        locust_p99_ms, locust_max_ms = _locust_closed_stats(folder / "closed")

    r = results["rate"]
    error = abs(r["achieved"] - rate) / rate
    print(f"open model, target {rate} req/s for {seconds} s: achieved {r['achieved']:.1f} req/s over {len(r['per_second'])} "
          f"full seconds ({error * 100:.2f}% off, goal <= {RATE_GOAL * 100:.0f}%): "
          f"{'PASS' if error <= RATE_GOAL else 'FAIL'}")
    lag = r["send_lag"]
    print(f"  sends: {r['late']} late (> 2 ms after intended), {r['dropped']} dropped; send lag p50 {lag.get('p50_us', 0)} µs, "
          f"p99 {lag.get('p99_us', 0)} µs, max {lag.get('max_us', 0)} µs")
    open_all = open_summary["kinds"]["all"]
    closed_all = closed_summary["kinds"]["all"]
    print(f"server paused {PAUSE_S:.0f} s (SIGSTOP/SIGCONT):")
    print(f"  open model {stall_rate} req/s, HDR from intended send time: p99 {open_all['p99_us'] / 1000:,.1f} ms, "
          f"max {open_all['max_us'] / 1000:,.1f} ms, {open_summary['counts'].get('late', 0)} late sends")
    print(f"  closed model, 5 users, Locust's own statistics:  p99 {locust_p99_ms:,.1f} ms, max {locust_max_ms:,.1f} ms")
    print(f"  closed model, 5 users, our HDR (actual send):    p99 {closed_all['p99_us'] / 1000:,.1f} ms, "
          f"max {closed_all['max_us'] / 1000:,.1f} ms")
    shows = open_all["max_us"] >= PAUSE_S * 1e6 * 0.95 and open_all["p99_us"] >= PAUSE_S * 1e6 * 0.5
    hides = locust_p99_ms < PAUSE_S * 1000 * 0.5
    print(f"result: stall {'visible' if shows else 'NOT visible'} in the open model's p99/max; "
          f"{'hidden from' if hides else 'visible in'} Locust's closed-model p99")
    results.update(open=open_summary, closed=closed_summary, locust_closed_p99_ms=locust_p99_ms,
                   locust_closed_max_ms=locust_max_ms)
    return results


if __name__ == "__main__":
    main()
