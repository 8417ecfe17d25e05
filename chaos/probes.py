"""Live numbers for steady-state probes, read from the run folder while it is being written.

- `metrics.jsonl` (1 s scrapes of every target's /metrics): counters become windowed deltas.
  * requests_per_s, error_rate: `cachestorm_requests_total`, errors = status 5xx (server side)
  * db_queries_per_s: `cachestorm_db_queries_total` (all kinds)
  * hit_ratio: lookups served from the cache / lookups (cachestorm/core/hitratio.py says which results)
- `latency/*.jsonl` (HDR histograms per worker per second, µs): p50/p95/p99/max over the window,
  from the `all` histograms when there are any, else `read` + `write`.

Windows are in run-relative seconds (the records' `t`). A number is None when the window holds
no data (e.g. before the first scrape); probes treat that as "no data", not as a deviation.
"""

from __future__ import annotations

import json
import re
from collections import deque
from pathlib import Path

from cachestorm.core.hitratio import RESULTS_METRIC, lookups, served_from_cache
from cachestorm.core.runfolder import RunFolder

LATENCY_METRICS = {"p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0, "max_ms": 100.0}
COUNTER_METRICS = ("requests_per_s", "error_rate", "db_queries_per_s", "hit_ratio")
METRICS = (*LATENCY_METRICS, *COUNTER_METRICS)

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _labels(key: str) -> tuple[str, dict[str, str]]:
    name, _, rest = key.partition("{")
    return name, dict(_LABEL.findall(rest))


def totals(metrics: dict[str, float]) -> dict[str, float]:
    """The counters probes need, summed over labels, from one scrape."""
    out = {"requests": 0.0, "errors": 0.0, "db_queries": 0.0}
    results: dict[str, float] = {}
    for key, value in metrics.items():
        name, labels = _labels(key)
        if name == "cachestorm_requests_total":
            out["requests"] += value
            if labels.get("status", "").startswith("5"):
                out["errors"] += value
        elif name == "cachestorm_db_queries_total":
            out["db_queries"] += value
        elif name == RESULTS_METRIC:
            result = labels.get("result", "")
            results[result] = results.get(result, 0.0) + value
    return {**out, "hits": served_from_cache(results), "lookups": lookups(results)}


class _Tail:
    """Reads the complete lines appended to a file since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def lines(self) -> list[dict]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return []
        self.offset += len(chunk)
        data = self.partial + chunk
        *complete, self.partial = data.split(b"\n")
        records = []
        for line in complete:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records


class LiveNumbers:
    """Incremental reader of a run folder; `value(metric, now_t, window_s)` answers probes."""

    def __init__(self, run_dir: str | Path, keep_s: float = 600.0):
        self.run_dir = Path(run_dir)
        self.keep_s = keep_s
        self._metrics_tail = _Tail(RunFolder(self.run_dir).metrics_path)
        self._latency_tails: dict[Path, _Tail] = {}
        self._counters: dict[str, deque] = {}      # instance -> deque[(t, totals)]
        self._latency: deque = deque()              # (t, kind, encoded histogram)

    def refresh(self) -> None:
        for record in self._metrics_tail.lines():
            if "metrics" not in record or "t" not in record:
                continue  # a failed scrape (target down): no counters to read
            samples = self._counters.setdefault(record.get("instance", ""), deque())
            samples.append((float(record["t"]), totals(record["metrics"])))
        for path in RunFolder(self.run_dir).worker_latency_files():  # not the merge: written after the run
            tail = self._latency_tails.setdefault(path, _Tail(path))
            for record in tail.lines():
                if "hist" in record and "t" in record:
                    self._latency.append((float(record["t"]), record.get("kind", "all"), record["hist"]))
        self._prune()

    def _prune(self) -> None:
        ends = [s[-1][0] for s in self._counters.values() if s]
        if self._latency:
            ends.append(self._latency[-1][0])
        latest = max(ends, default=0.0)
        horizon = latest - self.keep_s
        for samples in self._counters.values():
            while len(samples) > 2 and samples[1][0] < horizon:
                samples.popleft()
        while self._latency and self._latency[0][0] < horizon:
            self._latency.popleft()

    # -- numbers ---------------------------------------------------------------------
    def value(self, metric: str, now_t: float, window_s: float) -> float | None:
        if metric in LATENCY_METRICS:
            return self._percentile_ms(LATENCY_METRICS[metric], now_t, window_s)
        if metric in COUNTER_METRICS:
            return self._counter_value(metric, now_t, window_s)
        raise ValueError(f"unknown probe metric {metric!r}; known: {', '.join(METRICS)}")

    def _deltas(self, now_t: float, window_s: float) -> tuple[dict[str, float], float]:
        """Sum of each counter's increase over the window across instances, and the longest span."""
        summed = {"requests": 0.0, "errors": 0.0, "db_queries": 0.0, "hits": 0.0, "lookups": 0.0}
        rates_span = 0.0
        start = now_t - window_s
        for samples in self._counters.values():
            inside = [s for s in samples if s[0] <= now_t]
            if len(inside) < 2:
                continue
            last = inside[-1]
            before = [s for s in inside if s[0] <= start]
            first = before[-1] if before else inside[0]
            span = last[0] - first[0]
            if span <= 0:
                continue
            for key in summed:
                delta = last[1][key] - first[1][key]
                summed[key] += delta if delta >= 0 else last[1][key]  # a restarted target resets to 0
            rates_span = max(rates_span, span)
        return summed, rates_span

    def _counter_value(self, metric: str, now_t: float, window_s: float) -> float | None:
        deltas, span = self._deltas(now_t, window_s)
        if span <= 0:
            return None
        if metric == "requests_per_s":
            return deltas["requests"] / span
        if metric == "db_queries_per_s":
            return deltas["db_queries"] / span
        if metric == "error_rate":
            return deltas["errors"] / deltas["requests"] if deltas["requests"] else None
        return deltas["hits"] / deltas["lookups"] if deltas["lookups"] else None  # hit_ratio

    def _percentile_ms(self, percentile: float, now_t: float, window_s: float) -> float | None:
        from hdrh.histogram import HdrHistogram

        chosen = [r for r in self._latency if now_t - window_s <= r[0] < now_t]
        if any(kind == "all" for _t, kind, _h in chosen):
            chosen = [r for r in chosen if r[1] == "all"]
        if not chosen:
            return None
        merged = HdrHistogram(1, 60_000_000, 3)
        for _t, _kind, encoded in chosen:
            merged.decode_and_add(encoded)
        if merged.get_total_count() == 0:
            return None
        if percentile >= 100:
            return merged.get_max_value() / 1000.0
        return merged.get_value_at_percentile(percentile) / 1000.0


class TargetSampler:
    """Once a second, each target's /metrics -> the run folder's metrics.jsonl, in the scraper's record
    format ({t, wall, instance, metrics: {name{labels}: value}}). For runs without cachestorm's scraper
    (plain `locust -f ... --experiment`): the counter probes (error_rate, hit_ratio, requests_per_s,
    db_queries_per_s) read what it writes, as they read the scraper's in `cachestorm run`."""

    def __init__(self, run_dir: str | Path, t0_wall: float, targets: dict[str, str], interval_s: float = 1.0):
        import threading

        self.path = RunFolder(run_dir).metrics_path
        self.t0_wall = t0_wall
        self.targets = dict(targets)
        self.interval_s = interval_s
        self.samples = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cachestorm-chaos-sampler", daemon=True)

    def start(self) -> TargetSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def sample_once(self, http, out) -> None:
        import time

        wall = time.time()
        t = round(wall - self.t0_wall, 3)
        for instance, base_url in self.targets.items():
            try:
                response = http.get(f"{base_url.rstrip('/')}/metrics")
                response.raise_for_status()
                record = {"t": t, "wall": wall, "instance": instance, "metrics": parse_metrics(response.text)}
            except Exception as exc:  # noqa: BLE001 - a target down (a fault) is a failed sample, not a crash
                self.errors += 1
                record = {"t": t, "wall": wall, "instance": instance, "error": f"{type(exc).__name__}: {exc}"[:200]}
            out.write(json.dumps(record) + "\n")
        out.flush()
        self.samples += 1

    def _loop(self) -> None:
        import time

        import httpx

        with httpx.Client(timeout=self.interval_s * 0.8) as http, open(self.path, "a") as out:
            next_at = time.monotonic()
            while not self._stop.is_set():
                self.sample_once(http, out)
                next_at += self.interval_s
                self._stop.wait(max(0.0, next_at - time.monotonic()))


def parse_metrics(text: str) -> dict[str, float]:
    """The exposition format's counters the probes read, keyed `name{labels}` (the scraper's spelling)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith("cachestorm_") or sample.name.endswith(("_bucket", "_created")):
                continue
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = float(sample.value)
    return samples


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
