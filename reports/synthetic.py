"""Synthetic histories for the checker benchmark: plausible traffic, a few planted stale reads."""

from __future__ import annotations

import json
import random
from pathlib import Path

from cachestorm.reports.history import COLUMNS, MAGIC, write_history

from cachestorm.core.runfolder import RunFolder


def write_synthetic_histories(directory: str | Path, operations: int, *, workers: int = 4, keys: int = 10_000,
                              users: int = 200, stale_every: int = 1000, seed: int = 7) -> list[Path]:
    """Write `operations` operations over `workers` history files; returns their paths.

    Each worker owns its own keys (so versions stay coherent without coordination):
    80% reads, 15% writes, 5% increments; one read in `stale_every` returns the
    previous version after a newer one was acknowledged.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    per_worker = operations // workers
    paths = []
    for worker in range(workers):
        count = per_worker + (operations - per_worker * workers if worker == workers - 1 else 0)
        path = directory / f"w{worker}-{1000 + worker}.tsv"
        _write_worker(path, worker, count, keys // workers or 1, users, stale_every, rng)
        paths.append(path)
    return paths


def _write_worker(path: Path, worker: int, count: int, keys: int, users: int, stale_every: int,
                  rng: random.Random) -> None:
    version = [1] * keys
    now = 1_000_000_000_000 + worker
    wall = 1_700_000_000.0
    lines = [MAGIC, "\t".join(COLUMNS)]
    choices = rng.choices(range(keys), weights=[1.0 / (k + 1) for k in range(keys)], k=count)
    draws = [rng.random() for _ in range(count)]
    for n in range(count):
        k = choices[n]
        key = f"{worker}-{k + 1}"
        start = now
        end = start + 200_000 + (n % 7) * 50_000
        now = end + 10_000
        user = f"u{n % users}"
        rid = f"{worker}-{n}"
        draw = draws[n]
        if draw < 0.80:
            served = version[k] - 1 if (n % stale_every == 0 and version[k] > 1) else version[k]
            lines.append(f"{key}\tread\t{start}\t{end}\t{wall + n * 1e-4:.4f}\t200\t{served}\thit\t{user}\t{rid}\t")
        elif draw < 0.95:
            version[k] += 1
            lines.append(f"{key}\twrite\t{start}\t{end}\t{wall + n * 1e-4:.4f}\t200\t{version[k]}\t\t{user}\t{rid}\t")
        else:
            lines.append(f"c{key}\tincr\t{start}\t{end}\t{wall + n * 1e-4:.4f}\t200\t\t\t{user}\t{rid}\t1")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- a whole run folder

SYNTHETIC_T0_NS = 1_000_000_000_000
SYNTHETIC_STARTED_AT = 1_700_000_000.0


def write_synthetic_run(run_dir: str | Path, *, strategy: str = "cache-aside", duration_s: int = 30,
                        fault_start: int = 10, fault_end: int = 12, steady_db_per_s: float = 10.0,
                        fault_db_per_s: float = 200.0, steady_ms: float = 1.0, fault_ms: float = 100.0,
                        recovery_s: int = 2, expired_keys: int = 10, stale_reads: int = 1,
                        experiment: str = "hot-key-expiry", workers: int = 2) -> Path:
    """A complete, deterministic run folder with known answers (used by tests and demos).

    Load runs [0, duration_s); one fault "expire hot keys" over [fault_start, fault_end) with
    `fault_ms` latency and `fault_db_per_s` DB reads; for `recovery_s` seconds after it both are
    halfway back; then steady again.
    """
    from hdrh.histogram import HdrHistogram

    folder = RunFolder(run_dir)
    run_dir = folder.path
    folder.latency_dir.mkdir(parents=True, exist_ok=True)

    def phase(second: int) -> str:
        if fault_start <= second < fault_end:
            return "fault"
        if fault_end <= second < fault_end + recovery_s:
            return "recovering"
        return "steady"

    run = {"run_id": run_dir.name, "label": f"profiles-{strategy}-{experiment}",
           "settings": {"strategy": strategy, "domain": "profiles", "experiment": experiment,
                        "duration_s": duration_s, "declared_staleness_bound_s": 1.0},
           "experiment": experiment, "started_at": SYNTHETIC_STARTED_AT,
           "ended_at": SYNTHETIC_STARTED_AT + duration_s, "t0_monotonic_ns": SYNTHETIC_T0_NS,
           "cachestorm_version": "synthetic", "outcome": "ok"}
    folder.write_meta(run)
    journal = [
        {"what": "load", "kind": "load", "t_start": 0.0, "t_end": float(duration_s), "outcome": "ok", "details": {}},
        {"what": "expire hot keys", "kind": "fault", "t_start": float(fault_start), "t_end": float(fault_end),
         "outcome": "ok", "details": {"keys": expired_keys}},
        {"what": "probe hit ratio recovers", "kind": "probe", "t_start": float(duration_s - 5),
         "t_end": float(duration_s - 5), "outcome": "ok",
         "details": {"phase": "after", "metric": "hit_ratio", "value": 0.9, "min": 0.8, "max": None}},
    ]
    for record in journal:
        record["start"] = SYNTHETIC_STARTED_AT + record["t_start"]
        record["end"] = SYNTHETIC_STARTED_AT + record["t_end"]
    _write_jsonl(folder.journal_path, journal)

    latency_ms = {"steady": steady_ms, "fault": fault_ms, "recovering": (steady_ms + fault_ms) / 2}
    for worker in range(workers):
        records = []
        for second in range(duration_s):
            histogram = HdrHistogram(1, 60_000_000, 3)
            histogram.record_value(int(latency_ms[phase(second)] * 1000), 100)
            records.append({"t": float(second), "wall": SYNTHETIC_STARTED_AT + second, "interval_s": 1.0,
                            "worker": f"w{worker}", "kind": "all", "hist": histogram.encode().decode()})
        _write_jsonl(folder.latency_path(f"w{worker}-{100 + worker}"), records)

    db_rate = {"steady": steady_db_per_s, "fault": fault_db_per_s,
               "recovering": (steady_db_per_s + fault_db_per_s) / 2}
    totals: dict[str, float] = {}
    metrics_records, pg_records = [], []
    xact = 1000.0
    for second in range(duration_s + 1):
        # pg_stat_statements' calls of the read query: every read both instances ran so far
        read_calls = 2 * sum(v for k, v in totals.items() if k.startswith('cachestorm_db_queries_total{kind="read"'))
        for instance in ("t1", "t2"):
            metrics_records.append({"t": float(second), "wall": SYNTHETIC_STARTED_AT + second, "instance": instance,
                                    "metrics": dict(totals)})
        # increments during [second, second + 1), shared by two instances
        state = phase(second)
        increments = {
            'cachestorm_db_queries_total{kind="read",key_class="other"}': db_rate[state] / 2,
            'cachestorm_db_attempts_total{kind="read",key_class="other"}': db_rate[state] / 2,
            'cachestorm_db_queries_total{kind="write",key_class="other"}': 1.0,
            'cachestorm_cache_results_total{result="hit",key_class="other"}': 45.0 if state == "steady" else 5.0,
            'cachestorm_cache_results_total{result="miss",key_class="other"}': 5.0 if state == "steady" else 45.0,
            'cachestorm_recomputes_total{key_class="other"}': 5.0,
        }
        if second == fault_start:
            increments['cachestorm_db_queries_total{kind="read",key_class="hot"}'] = 1.5 * expired_keys / 2
            # the herd: 6 reads per key fell through to the DB, 1.5 of them got a connection and ran
            increments['cachestorm_db_attempts_total{kind="read",key_class="hot"}'] = 6.0 * expired_keys / 2
            for key in range(1, expired_keys + 1):
                increments[f'cachestorm_key_recomputes_total{{key="{key}"}}'] = 0.5
        for name, value in increments.items():
            totals[name] = totals.get(name, 0.0) + value
        pg_records.append({"t": float(second), "wall": SYNTHETIC_STARTED_AT + second, "xact_commit": xact,
                           "tup_returned": 0, "tup_fetched": 0, "calls": None, "read_calls": read_calls})
        xact += db_rate[state] + 2.0
    _write_jsonl(folder.metrics_path, metrics_records)
    _write_jsonl(folder.pg_stats_path, pg_records)

    S = 1_000_000_000
    ops = []
    for n in range(40):
        start = SYNTHETIC_T0_NS + n * S // 2
        ops.append(("1", "read", start, start + S // 100, SYNTHETIC_STARTED_AT + n / 2, 200,
                    1 + (n >= 2), "hit", "u2", f"r{n}", None))
    ops.insert(0, ("1", "write", SYNTHETIC_T0_NS, SYNTHETIC_T0_NS + S, SYNTHETIC_STARTED_AT, 200, 2, "", "u1",
                   "w1", None))
    for n in range(stale_reads):
        start = SYNTHETIC_T0_NS + (20 + n) * S
        ops.append(("1", "read", start, start + S // 100, SYNTHETIC_STARTED_AT + 20 + n, 200, 1, "stale", "u3",
                    f"s{n}", None))
    ops.append(("2", "read", SYNTHETIC_T0_NS + 5 * S, SYNTHETIC_T0_NS + 6 * S, SYNTHETIC_STARTED_AT + 5,
                "timeout", None, "", "u2", "t1", None))
    ops.append(("2", "read", SYNTHETIC_T0_NS + 6 * S, SYNTHETIC_T0_NS + 6 * S + 10, SYNTHETIC_STARTED_AT + 6,
                200, 3, "miss", "u2", "t1", None))
    ops.append(("2", "read", SYNTHETIC_T0_NS + 7 * S, SYNTHETIC_T0_NS + 7 * S + 10, SYNTHETIC_STARTED_AT + 7,
                503, None, "", "u2", "t2", None))
    write_history(folder.history_path("w0-100"), sorted(ops, key=lambda o: o[2]))
    folder.write_truth({"versions": {"profiles:1": 2, "profiles:2": 3}, "counters": {},
                        "declared_staleness_bound_s": 1.0})
    folder.locust_dir.mkdir(exist_ok=True)
    (folder.locust_dir / "failures.csv").write_text(
        'Method,Name,Error,Occurrences\nGET,/profiles/[id],"HTTPError(\'503: {""error"": ""pool_timeout""}\')",3\n')
    return run_dir


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
