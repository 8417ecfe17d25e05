"""Benchmark: what a run costs before its first request, by key space (10k, 100k, 1 M keys; 10 M
with --max 10000000), and the peak memory of every process while it runs.

One embedded stack (`cachestorm up` in a private folder) serves every round, as a user's stack
would be up already; each round is `cachestorm run --keys K --rows K --duration ... --rate ...
--no-report` in a subprocess, its processes' RSS sampled from /proc every 0.1 s. Figures and their
sources:
- to first request: the `run` process's start (this benchmark's clock) to the first operation of
  the run's histories (`start_wall`, written by Locust's users);
- seed: the target's own line "seeded ... in X s" in its log (rows created in PostgreSQL; part of
  start-up when absent, as on older versions); warm: the journal's "warm cache" step; truth: the
  journal's "truth from postgres" step (after the load, not before the first request);
- start-up: the rest before the first request (imports, reset, targets' start, Locust's start);
- peak RSS: the largest single process of each role (run, targets, Locust, Valkey, PostgreSQL; for
  PostgreSQL also the sum of its processes, shared buffers counted in each).
A first round at each size seeds the rows; `--repeat` rounds reuse them (as a second run does).

    python -m cachestorm.bench.keyspace [--max 1000000]     # or: cachestorm bench keyspace
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
SAMPLE_S = 0.1
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
SEEDED = re.compile(r"seeded (\d+) rows? .*?in ([0-9.]+) s")


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, ValueError, IndexError):
        return 0.0


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(parent, []).append(int(name))
    return tree


def _descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    out, todo = [], [pid]
    while todo:
        one = todo.pop()
        out.append(one)
        todo.extend(tree.get(one, []))
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Sampler:
    """Peak RSS per role while a run goes: its own process tree (run, targets, Locust) and the
    stack's servers (by pid, from stack.json)."""

    def __init__(self, run_pid: int, servers: dict[str, int]):
        self.run_pid = run_pid
        self.servers = servers
        self.peak: dict[str, int] = {}
        self._cpu: dict[tuple[str, int], float] = {}  # CPU seconds of each process, as last seen
        self.server_cpu_start: dict[int, float] = {}  # servers outlive the run: count from the start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def cpu(self) -> dict[str, float]:
        """CPU seconds each role used during the run (a figure the machine's load hardly moves)."""
        total: dict[str, float] = {}
        for (role, _), seconds in self._cpu.items():
            total[role] = total.get(role, 0.0) + seconds
        return total

    def _note_cpu(self, role: str, pid: int, start: float = 0.0) -> None:
        seconds = _cpu_s(pid) - start
        if seconds > self._cpu.get((role, pid), 0.0):
            self._cpu[(role, pid)] = seconds

    def _note(self, role: str, value: int) -> None:
        if value > self.peak.get(role, 0):
            self.peak[role] = value

    def _loop(self) -> None:
        while not self._stop.is_set():
            tree = _children()
            self._note("run", _rss(self.run_pid))
            self._note_cpu("run", self.run_pid)
            for pid in _descendants(self.run_pid, tree)[1:]:
                line = _cmdline(pid)
                role = "locust" if "locust" in line else "targets" if "targets" in line else None
                if role:
                    self._note(role, _rss(pid))
                    self._note_cpu(role, pid)
            for role, pid in self.servers.items():
                pids = _descendants(pid, tree)
                self._note(role, max((_rss(p) for p in pids), default=0))
                for one in pids:
                    self._note_cpu(role, one, self.server_cpu_start.setdefault(one, _cpu_s(one)))
                if role == "postgres":
                    self._note("postgres (sum)", sum(_rss(p) for p in pids))
            self._stop.wait(SAMPLE_S)


def _first_request(run_dir: Path) -> float | None:
    """The earliest start_wall of the run's histories."""
    first = None
    for path in sorted((run_dir / "histories").glob("*.tsv")):
        with path.open() as handle:
            handle.readline()
            header = handle.readline().rstrip("\n").split("\t")
            if "start_wall" not in header:
                continue
            column = header.index("start_wall")
            for line in handle:
                fields = line.rstrip("\n").split("\t")
                try:
                    value = float(fields[column])
                except (IndexError, ValueError):
                    continue
                first = value if first is None else min(first, value)
    return first


def _steps(run_dir: Path) -> dict[str, float]:
    seconds: dict[str, float] = {}
    journal = run_dir / "journal.jsonl"
    if journal.exists():
        for line in journal.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("start") is not None and entry.get("end") is not None:
                seconds[entry.get("what", "")] = entry["end"] - entry["start"]
    return seconds


def _seed_seconds(run_dir: Path) -> float | None:
    total = None
    for path in (run_dir / "logs").glob("*"):
        for match in SEEDED.finditer(path.read_text(errors="replace")):
            total = (total or 0.0) + float(match[2])
    return total


def _cli(python: str, *args: str, cwd: Path, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([python, "-m", "cachestorm", *args], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def one_round(python: str, workdir: Path, keys: int, duration: str, rate: int, servers: dict[str, int]) -> dict:
    out = workdir / "runs"
    before = set(out.glob("*")) if out.exists() else set()
    started = time.time()
    process = _cli(python, "run", "--keys", str(keys), "--rows", str(keys), "--duration", duration,
                   "--rate", str(rate), "--no-report", "--out", str(out), cwd=workdir, log=workdir / "bench.log")
    with Sampler(process.pid, servers) as sampler:
        code = process.wait()
    ended = time.time()
    made = sorted(set(out.glob("*")) - before)
    if code != 0 or not made:
        return {"keys": keys, "error": f"cachestorm run exited {code} (see {workdir / 'bench.log'})",
                "wall_s": ended - started, "peak_rss": sampler.peak, "cpu_s": sampler.cpu(),
                "load_average": os.getloadavg()[0]}
    run_dir = made[-1]
    meta = json.loads((run_dir / "run.json").read_text())
    steps = _steps(run_dir)
    first = _first_request(run_dir)
    to_first = (first - started) if first else None
    seed = _seed_seconds(run_dir)
    warm = steps.get("warm cache")
    before_first = [s for s in (seed, warm) if s is not None]
    return {
        "keys": keys, "wall_s": ended - started, "to_first_request_s": to_first,
        "to_load_start_s": meta.get("load_started_at", started) - started,
        "seed_s": seed, "warm_s": warm, "truth_s": steps.get("truth from postgres"),
        "startup_s": None if to_first is None else to_first - sum(before_first),
        "peak_rss": sampler.peak, "cpu_s": sampler.cpu(), "run_dir": str(run_dir),
        "truth_bytes": (run_dir / "truth.json").stat().st_size if (run_dir / "truth.json").exists() else None,
        "load_average": os.getloadavg()[0],
    }


def _mb(value: int | None) -> str:
    return "-" if not value else f"{value / 1e6:,.0f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


ROLES = ("run", "targets", "locust", "valkey", "postgres", "postgres (sum)")


def print_table(rounds: list[dict]) -> None:
    print(f"{'keys':>10} {'round':>6} {'to 1st req':>10} {'seed':>6} {'warm':>6} {'start-up':>8} {'truth':>6} "
          + " ".join(f"{r + ' MB':>12}" for r in ROLES) + f" {'truth.json':>10} {'load':>5}")
    for one in rounds:
        rss = one["peak_rss"]
        if one.get("error"):
            print(f"{one['keys']:>10,} {one['round']:>6} failed after {one['wall_s']:.0f} s: {one['error']}; peak RSS "
                  + ", ".join(f"{r} {_mb(v)} MB" for r, v in rss.items()) + f"; load {one['load_average']:.1f}")
            continue
        print(f"{one['keys']:>10,} {one['round']:>6} {_s(one['to_first_request_s']):>10} {_s(one['seed_s']):>6} "
              f"{_s(one['warm_s']):>6} {_s(one['startup_s']):>8} {_s(one['truth_s']):>6} "
              + " ".join(f"{_mb(rss.get(r)):>12}" for r in ROLES)
              + f" {_mb(one['truth_bytes']):>9}M {one['load_average']:>5.1f}")
    print("CPU seconds during each run (load-independent): "
          + "; ".join(f"{one['keys']:,} {one['round']}: " + ", ".join(f"{r} {v:.1f}" for r, v in sorted(one["cpu_s"].items()))
                      for one in rounds))
    firsts = [r for r in rounds if r["round"] == "seeded" and not r.get("error")]
    if len(firsts) >= 2:
        small, big = firsts[0], firsts[-1]
        extra = big["keys"] - small["keys"]
        print(f"growth per key ({small['keys']:,} -> {big['keys']:,} keys):")
        for name in ("to_first_request_s", "warm_s", "seed_s", "truth_s"):
            if small.get(name) is not None and big.get(name) is not None:
                print(f"  {name[:-2]:<17} {(big[name] - small[name]) / extra * 1e6:8.2f} µs")
        for role in ROLES:
            a, b = small["peak_rss"].get(role), big["peak_rss"].get(role)
            if a and b:
                print(f"  {role + ' RSS':<17} {(b - a) / extra:8.1f} bytes")


def _servers(workdir: Path) -> dict[str, int]:
    state = json.loads((workdir / ".cachestorm" / "stack.json").read_text())
    pids = {}
    for server in state.get("servers", []):
        role = {"redis": "valkey", "postgres": "postgres"}.get(str(server.get("kind")))
        if role and server.get("pid"):
            pids[role] = int(server["pid"])
    return pids


def main(max_keys: int = 1_000_000, duration: str = "5s", rate: int = 200, repeat: int = 1,
         python: str | None = None, workdir: str | None = None, json_out: str | None = None,
         min_keys: int = 0) -> list[dict]:
    python = python or sys.executable
    sizes = [k for k in SIZES if min_keys <= k <= max_keys] or [max_keys]
    if max_keys not in sizes:
        sizes.append(max_keys)
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cachestorm-bench-keyspace-"))
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "bench.log"
    print(f"bench keyspace: {', '.join(f'{k:,}' for k in sizes)} keys, {duration} at {rate}/s each; "
          f"interpreter {python}; folder {folder}", flush=True)
    up = _cli(python, "up", cwd=folder, log=log)
    if up.wait() != 0:
        raise SystemExit(f"cachestorm up failed; see {log}")
    rounds: list[dict] = []
    try:
        servers = _servers(folder)
        for keys in sizes:
            for index in range(1 + repeat):
                one = one_round(python, folder, keys, duration, rate, servers)
                one["round"] = "seeded" if index == 0 else "reused"
                rounds.append(one)
                print(f"  {keys:,} keys ({one['round']}): first request after {_s(one.get('to_first_request_s'))} s, "
                      f"load {one['load_average']:.1f}{'; ' + one['error'] if one.get('error') else ''}", flush=True)
                if one.get("error"):
                    break
            if rounds[-1].get("error"):
                break
    finally:
        _cli(python, "down", cwd=folder, log=log).wait()
    print_table(rounds)
    if json_out:
        Path(json_out).write_text(json.dumps(rounds, indent=1))
    return rounds


def _cli_main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=1_000_000, dest="max_keys")
    parser.add_argument("--min", type=int, default=0, dest="min_keys")
    parser.add_argument("--duration", default="5s")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="rounds per size after the seeding one")
    parser.add_argument("--python", default=None, help="interpreter whose cachestorm runs (default: this one)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None, dest="json_out")
    main(**vars(parser.parse_args()))


if __name__ == "__main__":
    _cli_main()
