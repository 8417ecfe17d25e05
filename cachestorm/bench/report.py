"""`cachestorm bench report`: analysis and rendering of run folders of 5, 15 and 60 minutes (synthetic,
shaped like `cachestorm run --rate 200` with a hot-key expiry: reports/synthetic.py write_realistic_run),
each in a fresh process: seconds (wall and CPU), peak RSS, and the growth exponent (log-log slope of
seconds against the run's length: 1 is linear, 2 quadratic)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOALS_S = {15: 5.0, 60: 15.0}  # minutes -> seconds to analyse and render (issue #27, on 2 quiet cores)
GOAL_RSS_MB = 300.0
GOAL_EXPONENT = 1.2

# run in a fresh interpreter, so each folder's peak RSS is its own (ru_maxrss of this process)
_CHILD = """
import json, resource, sys, time
from cachestorm.reports.analysis import analyze_run
from cachestorm.reports.render import write_run_reports
wall, cpu = time.perf_counter(), time.process_time()
analysis = analyze_run(sys.argv[1])
analyzed_wall, analyzed_cpu = time.perf_counter() - wall, time.process_time() - cpu
write_run_reports(analysis, sys.argv[1])
total_wall, total_cpu = time.perf_counter() - wall, time.process_time() - cpu
# VmHWM is this program's own peak; ru_maxrss may carry the parent's RSS at fork time (Linux keeps it across exec)
try:
    peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
except (OSError, StopIteration, ValueError):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"analysis_s": analyzed_wall, "analysis_cpu_s": analyzed_cpu, "total_s": total_wall,
                  "total_cpu_s": total_cpu, "peak_rss_mb": peak_kb / 1024}))
"""


def measure(run_dir: Path) -> dict:
    """Analyse and render one run folder in a fresh process: its timings and peak RSS."""
    done = subprocess.run([sys.executable, "-c", _CHILD, str(run_dir)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"report of {run_dir} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def growth_exponent(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) against log(x); None with fewer than two usable points."""
    usable = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(usable) < 2:
        return None
    mx = sum(x for x, _ in usable) / len(usable)
    my = sum(y for _, y in usable) / len(usable)
    spread = sum((x - mx) ** 2 for x, _ in usable)
    return sum((x - mx) * (y - my) for x, y in usable) / spread if spread else None


def main(minutes: tuple[float, ...] = (5, 15, 60), rate: float = 200.0, instances: int = 2,
         keep: str | None = None) -> dict:
    from cachestorm.reports.synthetic import write_realistic_run

    rows = []
    with tempfile.TemporaryDirectory(prefix="cachestorm-bench-report-") as tmp:
        root = Path(keep) if keep else Path(tmp)
        for length in minutes:
            run_dir = root / f"synthetic-{length:g}min"
            began = time.perf_counter()
            if not (run_dir / "run.json").exists():
                write_realistic_run(run_dir, duration_s=int(length * 60), rate=rate, instances=instances,
                                    fault_at_s=min(60.0, length * 60 / 4))
            generated_s = time.perf_counter() - began
            row = {"minutes": length, "generated_s": round(generated_s, 2), **measure(run_dir)}
            rows.append(row)
            goal = GOALS_S.get(length)
            print(f"report: {length:g} min at {rate:g}/s, {instances} targets: analysis {row['analysis_s']:.2f} s "
                  f"(CPU {row['analysis_cpu_s']:.2f} s), with rendering {row['total_s']:.2f} s "
                  f"(CPU {row['total_cpu_s']:.2f} s), peak RSS {row['peak_rss_mb']:.0f} MB"
                  + (f"; goal ≤ {goal:g} s" if goal else "") + f" (folder written in {generated_s:.1f} s)",
                  flush=True)
    wall_exponent = growth_exponent([(r["minutes"], r["total_s"]) for r in rows])
    cpu_exponent = growth_exponent([(r["minutes"], r["total_cpu_s"]) for r in rows])
    peak = max((r["peak_rss_mb"] for r in rows), default=0.0)
    # on a shared machine the wall clock waits for CPU: the CPU seconds are what a quiet machine takes
    met = {str(m): min(r["total_s"], r["total_cpu_s"]) <= goal for m, goal in GOALS_S.items()
           for r in rows if r["minutes"] == m}
    print(f"report: growth exponent {_show(wall_exponent)} (wall), {_show(cpu_exponent)} (CPU) — 1 is linear, "
          f"goal ≤ {GOAL_EXPONENT}; peak RSS {peak:.0f} MB (goal ≤ {GOAL_RSS_MB:.0f} MB); "
          + ", ".join(f"{m} min {'ok' if ok else 'TOO SLOW'}" for m, ok in met.items()))
    return {"rows": rows, "growth_exponent": wall_exponent, "growth_exponent_cpu": cpu_exponent,
            "peak_rss_mb": peak, "goals_met": met,
            "linear": cpu_exponent is not None and cpu_exponent <= GOAL_EXPONENT,
            "small": peak <= GOAL_RSS_MB}


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
