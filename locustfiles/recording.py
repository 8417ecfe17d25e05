"""Recording to the run folder: operation histories, per-second HDR latency files, and their merge.

No locust import here: the conductor and reports call ``merge_run`` directly.
Formats: docs/design.md ("Latency files", "History files").
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from hdrh.histogram import HdrHistogram

from cachestorm.core.runfiles import read_jsonl
from cachestorm.core.runfolder import RunFolder

LOWEST_US, HIGHEST_US, SIGNIFICANT = 1, 60_000_000, 3
HISTORY_MAGIC = "# cachestorm-history v1"
HISTORY_COLUMNS = (
    "key", "op", "start_ns", "end_ns", "start_wall", "status", "version", "source", "user", "request_id", "value", "attempt",
)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)


class HistorySampler:
    """Which keys get a history: always ids 1..hot_keys, plus a fixed pseudo-random ``fraction`` of all ids.

    The choice depends only on the key id (a multiplicative hash), so every worker samples the same keys.
    """

    def __init__(self, hot_keys: int, fraction: float):
        self.hot_keys = hot_keys
        self.threshold = int(fraction * 2**32)

    def __call__(self, key: int) -> bool:
        return key <= self.hot_keys or (key * 2654435761) % 2**32 < self.threshold


class HistoryWriter:
    """Streams history lines to ``histories/<worker>.tsv`` through a 1 MiB buffer (flushed each second)."""

    def __init__(self, run_dir: Path, worker: str):
        folder = RunFolder(run_dir)
        folder.histories_dir.mkdir(parents=True, exist_ok=True)
        self.path = folder.history_path(worker)
        run = 1
        while self.path.exists():  # a second test in the same process (web UI): never clobber the first
            run += 1
            self.path = folder.history_path(worker, run)
        self.file = open(self.path, "w", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        self.file.write(HISTORY_MAGIC + "\n" + "\t".join(HISTORY_COLUMNS) + "\n")
        self.lines = 0

    def record(self, key, op, start_ns, end_ns, start_wall, status, version, source, user, request_id, value, attempt):
        self.file.write(
            f"{key}\t{op}\t{start_ns}\t{end_ns}\t{start_wall:.6f}\t{status}\t{version}\t{source}\t{user}\t{request_id}\t{value}\t{attempt}\n"
        )
        self.lines += 1

    def flush(self):
        if not self.file.closed:
            self.file.flush()

    def close(self):
        if not self.file.closed:
            self.file.close()


def read_history(path: Path) -> list[dict[str, str]]:
    """Parse a history file (for tests and reports); checks the magic line and the header."""
    lines = Path(path).read_text().splitlines()
    if not lines or lines[0] != HISTORY_MAGIC:
        raise ValueError(f"{path}: not a cachestorm history (first line {lines[:1]})")
    header = lines[1].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[2:]]


class LatencyRecorder:
    """HDR histograms per wall-clock second (interval of completion) per kind, to ``latency/<worker>.jsonl``.

    The hot path only appends integer microseconds to a list; at the end of each second the values
    are counted and recorded (``record_value(v, count)``), and ``all`` is the lossless sum of the
    ``read`` and ``write`` histograms. ``counts`` are per-interval counters (requests, attempts,
    sent, late, dropped) written on the ``all`` line. Open-model send lag goes to kind ``send_lag``.
    """

    def __init__(self, run_dir: Path, worker: str, start_wall: float | None = None):
        folder = RunFolder(run_dir)
        folder.latency_dir.mkdir(parents=True, exist_ok=True)
        self.path = folder.latency_path(worker)
        self.file = open(self.path, "a", buffering=1 << 16)  # noqa: SIM115 - closed in close()
        self._init(worker, start_wall)

    def _init(self, worker: str, start_wall: float | None):
        self.worker = worker
        self.start_wall = start_wall
        self.second: int | None = None
        self.values: dict[str, list[int]] = {}
        self.counts: dict[str, int] = {}
        self.requests = 0
        self.attempts = 0
        self.totals: dict[str, HdrHistogram] = {}
        self.total_counts: dict[str, int] = {}

    def record(self, kind: str, micros: float, now_wall: float | None = None):
        second = int(time.time() if now_wall is None else now_wall)
        if second != self.second:
            self.roll(second)
        values = self.values.get(kind)
        if values is None:
            values = self.values[kind] = []
        values.append(int(micros))

    def request_done(self, kind: str, micros: float, attempts: int, now_wall: float):
        """The hot path: one logical request's latency and its attempt count."""
        second = int(now_wall)
        if second != self.second:
            self.roll(second)
        values = self.values.get(kind)
        if values is None:
            values = self.values[kind] = []
        values.append(int(micros))
        self.requests += 1
        self.attempts += attempts

    def count(self, name: str, n: int = 1, now_wall: float | None = None):
        second = int(time.time() if now_wall is None else now_wall)
        if second != self.second:
            self.roll(second)
        self.counts[name] = self.counts.get(name, 0) + n

    def _histograms(self) -> dict[str, HdrHistogram]:
        hists: dict[str, HdrHistogram] = {}
        for kind, values in self.values.items():
            hist = hists[kind] = new_histogram()
            for value, count in Counter(values).items():
                hist.record_value(min(HIGHEST_US, max(LOWEST_US, value)), count)
        requests = [h for kind, h in hists.items() if kind != "send_lag"]
        if requests:
            everything = hists["all"] = new_histogram()
            for hist in requests:
                everything.add(hist)
        return hists

    def roll(self, new_second: int | None = None):
        """Write the finished interval (if any) and start ``new_second``."""
        if self.requests:
            self.counts["requests"] = self.counts.get("requests", 0) + self.requests
            self.counts["attempts"] = self.counts.get("attempts", 0) + self.attempts
        if self.second is not None and (self.values or self.counts):
            if self.start_wall is None:
                self.start_wall = float(self.second)
            t = self.second - self.start_wall
            hists = self._histograms()
            if self.counts and "all" not in hists:
                hists["all"] = new_histogram()
            for kind, hist in sorted(hists.items()):
                record = {"t": t, "wall": self.second, "interval_s": 1.0, "worker": self.worker, "kind": kind,
                          "hist": hist.encode().decode("ascii")}
                if kind == "all" and self.counts:
                    record["counts"] = self.counts
                self.file.write(json.dumps(record) + "\n")
                total = self.totals.get(kind)
                if total is None:
                    total = self.totals[kind] = new_histogram()
                total.add(hist)
            for name, n in self.counts.items():
                self.total_counts[name] = self.total_counts.get(name, 0) + n
            self.file.flush()
        self.second = new_second
        self.values = {}
        self.counts = {}
        self.requests = self.attempts = 0

    def close(self):
        self.roll(None)
        if not self.file.closed:
            self.file.close()


def summarize(hist: HdrHistogram) -> dict[str, float]:
    if hist.get_total_count() == 0:
        return {"count": 0}
    return {
        "count": hist.get_total_count(),
        "p50_us": hist.get_value_at_percentile(50),
        "p99_us": hist.get_value_at_percentile(99),
        "p999_us": hist.get_value_at_percentile(99.9),
        "max_us": hist.get_max_value(),
        "mean_us": round(hist.get_mean_value(), 1),
    }


def merge_run(run_dir: str | Path) -> dict:
    """Merge every worker's ``latency/*.jsonl`` into ``latency/merged.jsonl`` (lossless HDR adds).

    One line per (second, kind), ``worker: "merged"``, with summed ``counts``; returns whole-run
    totals: ``{"kinds": {kind: summary}, "counts": {...}, "workers": n, "intervals": n}``.
    Idempotent: the master calls it at test stop and the conductor may call it again.
    """
    run_folder = RunFolder(run_dir)
    folder = run_folder.latency_dir
    merged: dict[tuple[int, str], HdrHistogram] = {}
    counts: dict[int, dict[str, int]] = {}
    workers = set()
    for path in run_folder.worker_latency_files():
        for record in read_jsonl(path):  # a worker killed mid-line loses its last line, the rest still counts
            workers.add(record["worker"])
            key = (int(record["wall"]), record["kind"])
            hist = merged.get(key)
            if hist is None:
                merged[key] = HdrHistogram.decode(record["hist"])
            else:
                hist.decode_and_add(record["hist"])
            for name, n in record.get("counts", {}).items():
                bucket = counts.setdefault(key[0], {})
                bucket[name] = bucket.get(name, 0) + n
    start = run_folder.started_at()
    if start is None:
        start = float(min((wall for wall, _ in merged), default=0))
    totals: dict[str, HdrHistogram] = {}
    if folder.is_dir():
        tmp = run_folder.merged_latency_path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as out:
            for (wall, kind), hist in sorted(merged.items()):
                record = {"t": wall - start, "wall": wall, "interval_s": 1.0, "worker": "merged", "kind": kind,
                          "hist": hist.encode().decode("ascii")}
                if kind == "all" and wall in counts:
                    record["counts"] = counts[wall]
                out.write(json.dumps(record) + "\n")
                total = totals.get(kind)
                if total is None:
                    total = totals[kind] = new_histogram()
                total.add(hist)
        tmp.replace(run_folder.merged_latency_path)
    total_counts: dict[str, int] = {}
    for bucket in counts.values():
        for name, n in bucket.items():
            total_counts[name] = total_counts.get(name, 0) + n
    return {
        "kinds": {kind: summarize(h) for kind, h in sorted(totals.items())},
        "counts": total_counts,
        "workers": len(workers),
        "intervals": len({wall for wall, _ in merged}),
    }


__all__ = ["HistorySampler", "HistoryWriter", "LatencyRecorder", "merge_run", "read_history", "summarize"]
