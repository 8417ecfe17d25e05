"""Synthetic histories for the checker benchmark: plausible traffic, a few planted stale reads."""

from __future__ import annotations

import json
import math
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


# ---------------------------------------------------------------- a realistic run folder, any length

# the targets' DB query histogram buckets (targets/metrics.py DB_QUERY_BUCKETS; reports stand on the core
# alone, so they are spelt out here) and the metrics a target exposes, as the scraper writes them
REALISTIC_DB_BUCKETS = tuple(round(0.001 * 1.2 ** i, 6) for i in range(57))
_ZERO_TOTALS = ("cachestorm_coalesced_waiters_total", "cachestorm_lock_waits_total", "cachestorm_lease_waits_total",
                "cachestorm_lease_refused_total", "cachestorm_permission_violations_total")


def write_realistic_run(run_dir: str | Path, *, duration_s: int = 300, rate: float = 200.0, instances: int = 2,
                        hot_keys: int = 10, fault_at_s: float = 60.0, fault_for_s: float = 6.0,
                        history_share: float = 0.7, seed: int = 42) -> Path:
    """A run folder shaped like `cachestorm run --duration <duration_s> --rate <rate>` with a hot-key
    expiry at `fault_at_s`: metrics.jsonl at 1/s per target with the targets' metric names and DB
    histogram buckets, pg_stats.jsonl, latency/merged.jsonl (an HDR histogram per second and kind),
    a journal with the fault and two probes a second, histories (the sampled keys' operations),
    truth.json and Locust's CSVs. Deterministic for a seed; its numbers are plausible, not known answers
    (for timing the report and comparing two implementations of it, see `cachestorm bench report`)."""
    from hdrh.histogram import HdrHistogram

    rng = random.Random(seed)
    folder = RunFolder(run_dir)
    run_dir = folder.path
    folder.latency_dir.mkdir(parents=True, exist_ok=True)
    started = SYNTHETIC_STARTED_AT
    load_t0 = 0.64  # load starts once the targets are up and warm
    load_t1 = load_t0 + duration_s
    fault_t0, fault_t1 = load_t0 + fault_at_s, load_t0 + fault_at_s + fault_for_s
    targets = {f"target-{n + 1}": f"http://127.0.0.1:{42000 + n}" for n in range(instances)}
    folder.write_meta({
        "cachestorm_version": "synthetic", "run_id": run_dir.name, "label": "cache-aside-hot-key-expiry",
        "settings": {"strategy": "cache-aside", "domain": "profiles", "duration_s": float(duration_s),
                     "rate": rate, "instances": instances, "experiment": "hot-key-expiry",
                     "experiment_at_s": fault_at_s, "hot_keys": hot_keys, "keys": 1000, "rows": 10000,
                     "retry": "naive:3", "declared_staleness_bound_s": 1.0},
        "started_at": started, "t0_monotonic_ns": SYNTHETIC_T0_NS, "experiment": "hot-key-expiry",
        "targets": targets, "load_started_at": started + load_t0, "ended_at": started + load_t1 + 1.5,
        "outcome": "ok"})

    def effect(t: float) -> float:
        """0 in steady state, 1 inside the fault window, fading over 5 s after it."""
        if fault_t0 <= t < fault_t1:
            return 1.0
        if fault_t1 <= t < fault_t1 + 5:
            return 1.0 - (t - fault_t1) / 5
        return 0.0

    keys = [str(k) for k in range(1, hot_keys + 1)]
    journal = [
        {"what": "stack", "kind": "stack", "t_start": 0.001, "t_end": 0.001, "outcome": "ok", "details": {}},
        {"what": "start targets", "kind": "target", "t_start": 0.027, "t_end": 0.5, "outcome": "ok",
         "details": {"strategy": "cache-aside", "instances": instances, "targets": targets}},
        {"what": "warm cache", "kind": "target", "t_start": 0.5, "t_end": 0.6, "outcome": "ok", "details": {}},
        {"what": "load", "kind": "load", "t_start": load_t0, "t_end": load_t1, "outcome": "ok", "details": {}},
        {"what": "fault hot-key-expiry-repeated", "kind": "fault", "t_start": fault_t0, "t_end": fault_t1,
         "outcome": "ok", "details": {"fault": "hot-key-expiry-repeated", "at": fault_at_s, "for": fault_for_s,
                                      "experiment": "hot-key-expiry", "ended_by": "end of window",
                                      "applied": {"keys": hot_keys, "key_ids": keys, "mode": "expire"},
                                      "keys": hot_keys, "key_ids": keys}},
    ]
    for second in range(int(duration_s)):
        t = round(load_t0 + second + 0.02, 3)
        phase = "before" if t < fault_t0 else "during" if t < fault_t1 + 5 else "after"
        journal.append({"what": "probe p99 stays bounded", "kind": "probe", "t_start": t, "t_end": t,
                        "outcome": "ok", "details": {"phase": phase, "metric": "p99_ms",
                                                     "value": round(10 + 900 * effect(t), 3), "min": None,
                                                     "max": 1000.0, "window_s": 3.0}})
        journal.append({"what": "probe server errors stay rare", "kind": "probe", "t_start": t, "t_end": t,
                        "outcome": "ok" if effect(t) < 0.1 else "deviated",
                        "details": {"phase": phase, "metric": "error_rate", "value": round(0.3 * effect(t), 4),
                                    "min": None, "max": 0.01, "window_s": 5.0}})
    journal.sort(key=lambda r: r["t_start"])
    for record in journal:
        record["start"], record["end"] = started + record["t_start"], started + record["t_end"]

    # ---- the targets' counters and PostgreSQL's, scraped once a second
    totals = [dict.fromkeys(_ZERO_TOTALS, 0.0) | {"cachestorm_write_behind_backlog": 0.0,
                                                   "cachestorm_write_behind_flush_lag_seconds": 0.0}
              for _ in range(instances)]
    buckets = [[0.0] * len(REALISTIC_DB_BUCKETS) for _ in range(instances)]
    inf_counts = [0.0] * instances
    pg = {"xact_commit": 1000, "xact_rollback": 0, "tup_returned": 50_000, "tup_fetched": 40_000, "calls": 200,
          "exec_ms": 300.0}
    history_ops: list[tuple] = []
    versions = dict.fromkeys(keys, 1)
    latency_records = []
    samples = int(duration_s) + 3
    with folder.metrics_path.open("w", encoding="utf-8") as metrics_out, \
            folder.pg_stats_path.open("w", encoding="utf-8") as pg_out:
        for n in range(samples):
            t = round(0.694 + n * 1.0002, 3)
            loaded = load_t0 <= t - 1 < load_t1  # the second before this scrape carried load
            e = effect(t - 0.5)
            for i, (instance, metrics) in enumerate(zip(targets, totals, strict=True)):
                requests = rng.randint(int(rate * 0.9), int(rate * 1.1)) // instances if loaded else 0
                hot = int(requests * 0.7)
                failed = int(hot * 0.4 * e)
                misses_hot = int(hot * (0.01 + 0.3 * e))
                misses_rest = int((requests - hot) * 0.04)
                writes = int(requests * 0.05)
                _add(metrics, {
                    'cachestorm_cache_results_total{key_class="hot",result="failed"}': failed,
                    'cachestorm_cache_results_total{key_class="hot",result="hit"}': hot - failed - misses_hot,
                    'cachestorm_cache_results_total{key_class="hot",result="miss"}': misses_hot,
                    'cachestorm_cache_results_total{key_class="rest",result="hit"}': requests - hot - misses_rest,
                    'cachestorm_cache_results_total{key_class="rest",result="miss"}': misses_rest,
                    'cachestorm_db_queries_total{key_class="hot",kind="read"}': misses_hot,
                    'cachestorm_db_queries_total{key_class="hot",kind="write"}': writes // 2,
                    'cachestorm_db_queries_total{key_class="rest",kind="read"}': misses_rest,
                    'cachestorm_db_queries_total{key_class="rest",kind="write"}': writes - writes // 2,
                    "cachestorm_pool_waits_total": int(20 * e), "cachestorm_pool_timeouts_total": int(15 * e),
                    'cachestorm_recomputes_total{key_class="hot"}': misses_hot,
                    'cachestorm_recomputes_total{key_class="rest"}': misses_rest,
                    "cachestorm_request_seconds_count": requests,
                    "cachestorm_request_seconds_sum": requests * (0.002 + 0.5 * e),
                    'cachestorm_requests_total{route="/profiles/{id:int}",status="200"}': requests - int(15 * e),
                    'cachestorm_requests_total{route="/profiles/{id:int}",status="503"}': int(15 * e),
                })
                if n == 0:
                    _add(metrics, {'cachestorm_requests_total{route="/prefill",status="200"}': 1,
                                   'cachestorm_db_queries_total{key_class="rest",kind="prefill"}': 1})
                for key in keys:
                    _add(metrics, {f'cachestorm_key_recomputes_total{{key="{key}"}}': misses_hot // hot_keys})
                queries = misses_hot + misses_rest
                for _ in range(queries):
                    seconds = rng.lognormvariate(math.log(0.002 + 0.8 * e), 0.5)
                    for b, upper in enumerate(REALISTIC_DB_BUCKETS):
                        if seconds <= upper:
                            buckets[i][b] += 1
                inf_counts[i] += queries
                series = dict(metrics)
                for upper, count in zip(REALISTIC_DB_BUCKETS, buckets[i], strict=True):
                    series[f'cachestorm_db_query_seconds_bucket{{le="{upper}"}}'] = count
                series['cachestorm_db_query_seconds_bucket{le="+Inf"}'] = inf_counts[i]
                series["cachestorm_db_query_seconds_count"] = inf_counts[i]
                series["cachestorm_db_query_seconds_sum"] = round(inf_counts[i] * (0.003 + 0.1 * e), 6)
                metrics_out.write(json.dumps({"t": t, "wall": started + t, "instance": instance,
                                              "metrics": series}) + "\n")
                pg["xact_commit"] += queries + 1
                pg["calls"] += queries + 1
                pg["exec_ms"] = round(pg["exec_ms"] + queries * (2.0 + 800 * e) + 0.1, 3)
                pg["tup_returned"] += queries * 12
                pg["tup_fetched"] += queries * 10
            pg_out.write(json.dumps({"t": t, "wall": started + t, **pg, "active": 1 + int(3 * e),
                                     "slot_waits": int(5 * e)}) + "\n")

            # ---- the clients' side of the same second: HDR histograms and counts, sampled histories
            if not load_t0 <= t < load_t1:
                continue
            requests = rng.randint(int(rate * 0.95), int(rate * 1.05))
            all_h, read_h, write_h, lag_h = (HdrHistogram(1, 60_000_000, 3) for _ in range(4))
            timeouts = int(requests * 0.2 * e)
            for r in range(requests):
                write = r % 20 == 0
                us = int(rng.lognormvariate(math.log(1500 + 600_000 * e), 0.6))
                us = min(max(us, 1), 2_000_000)
                all_h.record_value(us)
                (write_h if write else read_h).record_value(us)
                lag_h.record_value(int(rng.expovariate(1 / 300)) + 1)
                if rng.random() < history_share:
                    key = keys[r % hot_keys]
                    start_ns = SYNTHETIC_T0_NS + int((t + r / requests) * 1e9)
                    status = "timeout" if r < timeouts else 200
                    if write:
                        versions[key] += 1
                    version = versions[key] if status == 200 else None
                    history_ops.append((key, "write" if write else "read", start_ns, start_ns + us * 1000,
                                        f"{started + t + r / requests:.6f}", status, version,
                                        "" if write or status != 200 else "hit", "", f"w0-{n}-{r}", None))
            counts = {"attempts_started": requests + timeouts, "requests_started": requests, "sent": requests,
                      "requests": requests, "attempts": requests + timeouts, "timeouts": timeouts}
            t_rec = round(t - 0.6, 6)
            for kind, histogram in (("all", all_h), ("read", read_h), ("send_lag", lag_h), ("write", write_h)):
                record = {"t": t_rec, "wall": int(started + t_rec), "interval_s": 1.0, "worker": "merged",
                          "kind": kind, "hist": histogram.encode().decode()}
                if kind == "all":
                    record["counts"] = counts
                latency_records.append(record)
    _write_jsonl(folder.latency_dir / "merged.jsonl", latency_records)
    _write_jsonl(folder.journal_path, journal)
    write_history(folder.history_path("w0-9917"), history_ops)
    folder.write_truth({"domain": "profiles", "versions": {f"profiles:{k}": v for k, v in versions.items()},
                        "counters": {}, "declared_staleness_bound_s": 1.0})
    folder.locust_dir.mkdir(exist_ok=True)
    total = sum(r["counts"]["requests"] for r in latency_records if "counts" in r)
    (folder.locust_dir / "stats_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
        "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,"
        "99.99%,100%\n"
        f",Aggregated,{total},{total // 100},2,8.1,0.5,2004.9,161.7,{rate},2.0,2,3,4,9,25,40,250,2000,2000,2000,2000\n")
    history_rows = ["Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,"
                    "99.9%,99.99%,100%,Total Request Count,Total Failure Count"]
    for second in range(int(duration_s)):
        e = effect(load_t0 + second)
        history_rows.append(f"{int(started + load_t0 + second)},50,,Aggregated,{rate:.6f},0.000000,2,3,3,4,6,9,"
                            f"12,{int(20 + 1500 * e)},{int(40 + 2000 * e)},2000,2000,{int(rate * second)},0")
    (folder.locust_dir / "stats_stats_history.csv").write_text("\n".join(history_rows) + "\n")
    (folder.locust_dir / "stats_failures.csv").write_text(
        'Method,Name,Error,Occurrences\nGET,/profiles/[id],"HTTPError(\'503: {""error"": ""pool_timeout""}\')",'
        f"{total // 100}\n")
    return run_dir


def _add(totals: dict[str, float], increments: dict[str, float]) -> None:
    for name, value in increments.items():
        totals[name] = totals.get(name, 0.0) + float(value)
