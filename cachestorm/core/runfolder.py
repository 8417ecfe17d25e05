"""The run folder (`RunFolder`: every file's name, writer and reader) and its journal: every step of a run
writes a record; reports read only these.

A journal record is one JSON line:
    {"what", "kind", "start", "end", "t_start", "t_end", "outcome", "details"}
with wall-clock unix seconds (`start`, `end`) and seconds since the run started (`t_*`).
Passwords in URLs are redacted on the way into the journal and run.json: a run folder is shared freely.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cachestorm.core.errors import CachestormError
from cachestorm.core.runfiles import (
    damaged,
    first_failure,
    incomplete,
    iter_jsonl,
    read_csv,
    read_json,
    read_jsonl,
)
from cachestorm.core.urls import redact


class Journal:
    """Append-only, thread-safe, flushed per record (a crash keeps what happened before it)."""

    def __init__(self, run_dir: str | Path, t0_wall: float | None = None):
        self.path = Path(run_dir) / RunFolder.JOURNAL
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0_wall = t0_wall if t0_wall is not None else time.time()
        self._lock = threading.Lock()

    def now(self) -> tuple[float, float]:
        wall = time.time()
        return wall, round(wall - self.t0_wall, 3)

    def record(self, what: str, kind: str, start: float, end: float | None, outcome: str,
               details: dict[str, Any] | None = None) -> dict:
        entry = {
            "what": what, "kind": kind, "start": start, "end": end,
            "t_start": round(start - self.t0_wall, 3),
            "t_end": None if end is None else round(end - self.t0_wall, 3),
            "outcome": outcome, "details": details or {},
        }
        line = redact(json.dumps(entry, default=str)) + "\n"
        with self._lock, open(self.path, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return entry

    @contextmanager
    def step(self, what: str, kind: str, **details: Any) -> Iterator[dict]:
        """Record a step with its outcome: ok, failed (with the error) or interrupted."""
        start = time.time()
        extra: dict[str, Any] = dict(details)
        try:
            yield extra
        except KeyboardInterrupt:
            self.record(what, kind, start, time.time(), "interrupted", extra)
            raise
        except BaseException as exc:
            extra["error"] = f"{exc.__class__.__name__}: {exc}"
            self.record(what, kind, start, time.time(), "failed", extra)
            raise
        self.record(what, kind, start, time.time(), "ok", extra)


@dataclass(frozen=True)
class Truth:
    """Final state read from PostgreSQL after the run (`truth.json`), for the consistency checker."""

    versions: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    declared_staleness_bound_s: float | None = None
    counters_start: dict[str, int] = field(default_factory=dict)  # before the load: a reused stack carries counts
    declared_revoke_bound_s: float | None = None  # permissions: the target's own revoke bound (TTL + 1 s)


class RunFolder:
    """One run folder: the name of every file in it, and the one way each is written and read.

    Writers: `RunFolder.new(out, label)`, `write_meta` (atomic, redacted), `journal()`, `write_truth`,
    `write_step_plan`; the recorders and the scraper open the paths named here. Readers get one line
    naming a damaged file, never a traceback; every JSON-lines file loses at most a torn last line
    (a run killed mid-write), damage anywhere else is an error.
    """

    META = "run.json"
    JOURNAL = "journal.jsonl"
    TRUTH = "truth.json"              # PostgreSQL's final state, for the consistency checker
    STEP_PLAN = "step_plan.json"      # the step load a capacity run offered
    METRICS = "metrics.jsonl"         # 1 s scrapes of every target's /metrics
    PG_STATS = "pg_stats.jsonl"       # 1 s samples of PostgreSQL's own counters
    LATENCY = "latency"               # per-second HDR histograms, one file per Locust worker
    MERGED_LATENCY = "merged.jsonl"   # every worker's latency, merged (in LATENCY)
    HISTORIES = "histories"           # operation histories, one .tsv per worker
    LOCUST = "locust"                 # Locust's own csv/json output
    LOCUST_PREFIX = "stats"           # --csv locust/stats: Locust writes stats_stats.csv, stats_failures.csv, ...
    LOGS = "logs"
    LOCUST_LOG = "locust.log"         # in LOGS
    REPORT_JSON = "report.json"
    REPORT_HTML = "report.html"
    SUMMARY_MD = "summary.md"
    CAPACITY = "capacity.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ------------------------------------------------------------ where things are

    @property
    def meta_path(self) -> Path:
        return self.path / self.META

    @property
    def journal_path(self) -> Path:
        return self.path / self.JOURNAL

    @property
    def truth_path(self) -> Path:
        return self.path / self.TRUTH

    @property
    def step_plan_path(self) -> Path:
        return self.path / self.STEP_PLAN

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def pg_stats_path(self) -> Path:
        return self.path / self.PG_STATS

    @property
    def latency_dir(self) -> Path:
        return self.path / self.LATENCY

    @property
    def merged_latency_path(self) -> Path:
        return self.latency_dir / self.MERGED_LATENCY

    @property
    def histories_dir(self) -> Path:
        return self.path / self.HISTORIES

    @property
    def locust_dir(self) -> Path:
        return self.path / self.LOCUST

    @property
    def locust_prefix(self) -> Path:
        """What Locust's --csv and --json-file get."""
        return self.locust_dir / self.LOCUST_PREFIX

    @property
    def logs_dir(self) -> Path:
        return self.path / self.LOGS

    @property
    def locust_log_path(self) -> Path:
        return self.logs_dir / self.LOCUST_LOG

    @property
    def report_json_path(self) -> Path:
        return self.path / self.REPORT_JSON

    @property
    def report_html_path(self) -> Path:
        return self.path / self.REPORT_HTML

    @property
    def summary_md_path(self) -> Path:
        return self.path / self.SUMMARY_MD

    @property
    def capacity_path(self) -> Path:
        return self.path / self.CAPACITY

    def latency_path(self, worker: str) -> Path:
        return self.latency_dir / f"{worker}.jsonl"

    def latency_done_path(self, worker: str) -> Path:
        """A worker's marker that its latency file is closed (the master merges when all are)."""
        return self.latency_dir / f"{worker}.done"

    def latency_done_count(self) -> int:
        return len(list(self.latency_dir.glob("*.done")))

    def worker_latency_files(self) -> list[Path]:
        """Every worker's latency file (not the merge)."""
        folder = self.latency_dir
        return sorted(p for p in folder.glob("*.jsonl") if p.name != self.MERGED_LATENCY) if folder.is_dir() else []

    def latency_files(self) -> list[Path]:
        """The merged latency file if there is one, else every worker's."""
        return [self.merged_latency_path] if self.merged_latency_path.exists() else self.worker_latency_files()

    def history_path(self, worker: str, run: int = 1) -> Path:
        return self.histories_dir / (f"{worker}.tsv" if run == 1 else f"{worker}.{run}.tsv")

    def history_files(self) -> list[Path]:
        return sorted(self.histories_dir.glob("*.tsv"))

    def locust_csv_path(self, name: str) -> Path | None:
        """Locust's `name`.csv (stats, stats_history, failures) in `locust/`, or None.

        design.md lists `stats.csv`; Locust itself writes `<prefix>_<name>.csv` for `--csv <prefix>`
        (`--csv locust/stats` gives `stats_stats.csv`), so any prefix is accepted.
        """
        exact = self.locust_dir / f"{name}.csv"
        if exact.exists():
            return exact
        candidates = sorted(self.locust_dir.glob(f"*_{name}.csv"))
        if name == "stats":  # "*_stats.csv" would also match a prefix ending in "_history"
            candidates = [c for c in candidates if not c.name.endswith("_history.csv")]
        return candidates[0] if candidates else None

    def is_run(self) -> bool:
        """Has this folder a run's record (run.json)?"""
        try:
            return self.meta_path.exists()
        except OSError:  # a name the file system cannot look up (too long): not a run folder
            return False

    # ------------------------------------------------------------ writers

    @classmethod
    def new(cls, out: str | Path, label: str) -> RunFolder:
        """A fresh `<out>/<stamp>-<label>/` (never an existing one)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = "".join(c if c.isalnum() or c in "-_+." else "_" for c in label)
        base = make_folder(out) / f"{stamp}-{safe}"
        path, n = base, 1
        while True:
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                n += 1
                path = Path(f"{base}-{n}")

    def write_meta(self, meta: dict) -> None:
        _write_json_atomic(self.meta_path, meta, indent=2)

    def journal(self, t0_wall: float | None = None) -> Journal:
        return Journal(self.path, t0_wall)

    def write_truth(self, truth: dict) -> None:
        _write_json_atomic(self.truth_path, truth)

    def write_step_plan(self, max_rate: float, levels: list[float], hold_s: float) -> None:
        """The step load as offered (levels are fractions of max_rate), so reports need not rebuild it."""
        _write_json_atomic(self.step_plan_path, {"max_rate": float(max_rate), "levels": [float(x) for x in levels],
                                                 "hold_s": float(hold_s)}, indent=2)

    # ------------------------------------------------------------ readers

    @classmethod
    def existing(cls, path: str | Path) -> RunFolder:
        """A run folder to read, or one line saying why this is not one."""
        folder = cls(path)
        if not folder.path.is_dir():
            raise CachestormError(f"{folder.path}: no such run folder; pass a runs/<run-id>/ directory")
        if not folder.is_run() and not folder.histories_dir.is_dir():
            raise CachestormError(f"{folder.path}: not a run folder (no {cls.META}); pass a runs/<run-id>/ directory")
        return folder

    def meta(self) -> dict:
        return read_json(self.meta_path)

    def journal_records(self) -> list[dict]:
        return read_jsonl(self.journal_path)

    def metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def iter_metrics(self):
        """metrics.jsonl's records one at a time (a long run's scrapes need not all be in memory)."""
        return iter_jsonl(self.metrics_path)

    def pg_stats(self) -> list[dict]:
        return read_jsonl(self.pg_stats_path)

    def truth(self) -> Truth | None:
        """truth.json, or None when the run recorded none (it did not finish its load)."""
        path = self.truth_path
        if not path.exists():
            return None
        data = read_json(path)
        try:
            return Truth(
                versions={str(k): int(v) for k, v in (data.get("versions") or {}).items()},
                counters={str(k): int(v) for k, v in (data.get("counters") or {}).items()},
                declared_staleness_bound_s=_float_or_none(data.get("declared_staleness_bound_s")),
                counters_start={str(k): int(v) for k, v in (data.get("counters_start") or {}).items()},
                declared_revoke_bound_s=_float_or_none(data.get("declared_revoke_bound_s")),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise CachestormError(f"{path}: not a valid truth file ({exc}); expected "
                                  '{"versions": {...}, "counters": {...}, "declared_staleness_bound_s": s|null}') from None

    def locust_csv(self, name: str) -> list[dict]:
        path = self.locust_csv_path(name)
        return [] if path is None else read_csv(path)

    def started_at(self) -> float | None:
        """run.json's `started_at` (wall clock), or None: for recorders that also run without a conductor."""
        try:
            return float(json.loads(self.meta_path.read_text())["started_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def step_plan(self) -> tuple[float, list[float], float]:
        """(max rate, level per step, hold seconds) as the run recorded them when it started."""
        if not self.step_plan_path.exists():
            raise CachestormError(f"{self.path}: no {self.STEP_PLAN}: not a capacity run (an open-model step load, "
                                  "run `cachestorm capacity`), or recorded by an older version")
        plan = read_json(self.step_plan_path)
        with damaged(self.step_plan_path, "not a step plan"):
            max_rate, hold = float(plan["max_rate"]), float(plan["hold_s"])
            levels = [float(level) for level in plan["levels"]]
            if max_rate <= 0 or hold <= 0 or not levels:
                raise ValueError(f"max_rate {max_rate}, hold_s {hold}, {len(levels)} levels")
        return max_rate, levels, hold

    def incomplete(self) -> str | None:
        """incomplete() of this run, from its run.json and its journal (what report.json's run says)."""
        return incomplete({"outcome": self.meta().get("outcome"), "failure": first_failure(self.journal_records())})


def _float_or_none(value) -> float | None:
    return None if value is None else float(value)


def _write_json_atomic(path: Path, data: dict, indent: int | None = None) -> None:
    """Readers never see half a file; passwords in URLs never reach the disk."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(redact(json.dumps(data, indent=indent, default=str)))
    os.replace(tmp, path)


def make_folder(path: str | Path, exist_ok: bool = True, flag: str = "--out") -> Path:
    """mkdir -p, or one line saying why not (a file in the way, no permission, a read-only place)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if path.is_dir():
            raise  # exist_ok=False: the caller picks another name
        raise CachestormError(f"{flag} {path}: a file is in the way; give a folder") from None
    except OSError as exc:
        raise CachestormError(f"{flag} {path}: cannot create a folder there ({exc.strerror}); "
                              "give a folder you can write to") from None
    return path
