"""Once a second: each target's /metrics -> metrics.jsonl, PostgreSQL's own counters -> pg_stats.jsonl.

PostgreSQL's counters are the ground truth for DB load: a target can only report what it
believes it did.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cachestorm.core.runfolder import RunFolder

SKIPPED_PREFIXES = ("python_", "process_")
SKIPPED_SUFFIXES = ("_bucket", "_created")
KEPT_BUCKETS = ("cachestorm_db_query_seconds_bucket",)  # the DB's latency over any window, from bucket increases

PG_STATS_SQL = """
SELECT d.xact_commit, d.xact_rollback, d.tup_returned, d.tup_fetched,
       (SELECT sum(calls) FROM pg_stat_statements) AS calls,
       (SELECT sum(total_exec_time) FROM pg_stat_statements) AS exec_ms,
       -- the targets' read queries alone (top-level, this database): counted when each one ends,
       -- with no reporting delay, and without the scraper's own statements
       (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
         WHERE toplevel AND dbid = d.datid AND query LIKE '%(SELECT cachestorm_recompute(%') AS read_calls,
       (SELECT count(*) FROM pg_stat_activity WHERE state = 'active') AS active,
       -- queries queued for a DB slot (--db-capacity's advisory locks)
       (SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory') AS slot_waits
FROM pg_stat_database d WHERE d.datname = current_database()
"""


def parse_prometheus(text: str) -> dict[str, float]:
    """Samples of the exposition format keyed by `name{labels}` as prometheus_client writes them
    (the readers match that spelling); a sample's timestamp is dropped (the scrape has its own).
    ValueError on text that is not the exposition format."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name.startswith(SKIPPED_PREFIXES) or (name.endswith(SKIPPED_SUFFIXES) and name not in KEPT_BUCKETS):
                continue
            samples[name + _label_text(sample.labels)] = float(sample.value)
    return samples


def _label_text(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


class Scraper:
    """A background thread that samples every `interval_s` until stopped."""

    def __init__(self, run_dir: str | Path, t0_wall: float, targets: dict[str, str],
                 postgres_url: str | None, interval_s: float = 1.0):
        self.run_dir = Path(run_dir)
        self.t0_wall = t0_wall
        self.targets = dict(targets)   # instance name -> base URL
        self.postgres_url = postgres_url
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cachestorm-scraper", daemon=True)
        self.samples = 0
        self.errors = 0

    def start(self) -> Scraper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        conn = None
        with httpx.Client(timeout=self.interval_s * 0.8) as http, \
                open(RunFolder(self.run_dir).metrics_path, "a") as metrics_out, \
                open(RunFolder(self.run_dir).pg_stats_path, "a") as pg_out:
            next_at = time.monotonic()
            while not self._stop.is_set():
                wall = time.time()
                t = round(wall - self.t0_wall, 3)
                for instance, base_url in self.targets.items():
                    try:
                        response = http.get(f"{base_url}/metrics")
                        response.raise_for_status()
                        record = {"t": t, "wall": wall, "instance": instance,
                                  "metrics": parse_prometheus(response.text)}
                    except httpx.HTTPError as exc:
                        self.errors += 1
                        record = {"t": t, "wall": wall, "instance": instance, "error": str(exc)[:200]}
                    except ValueError as exc:
                        self.errors += 1
                        error = f"/metrics is not the Prometheus text format: {exc}"
                        record = {"t": t, "wall": wall, "instance": instance, "error": error[:200]}
                    metrics_out.write(json.dumps(record) + "\n")
                conn = self._pg_sample(conn, pg_out, t, wall)
                metrics_out.flush()
                pg_out.flush()
                self.samples += 1
                next_at += self.interval_s
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        if conn is not None:
            conn.close()

    def _pg_sample(self, conn, out, t: float, wall: float):
        if not self.postgres_url:
            return None
        import psycopg

        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(self.postgres_url, autocommit=True, connect_timeout=2)
            row = conn.execute(PG_STATS_SQL).fetchone()
            names = ("xact_commit", "xact_rollback", "tup_returned", "tup_fetched", "calls", "exec_ms", "read_calls",
                     "active", "slot_waits")
            record = {"t": t, "wall": wall, **{k: (None if v is None else int(v)) for k, v in zip(names, row, strict=True)}}
        except Exception as exc:  # noqa: BLE001 - the DB may be down on purpose (a fault)
            self.errors += 1
            record = {"t": t, "wall": wall, "error": str(exc).splitlines()[0][:200] if str(exc) else "error"}
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
            conn = None
        out.write(json.dumps(record) + "\n")
        return conn
