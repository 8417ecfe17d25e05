"""The report's algorithms as they were at 1e5cb63 (a rescan of the whole run per second, every second's
histogram kept): the oracle the fast ones must equal to the number (tests/test_report_speed.py).
Definitions (which seconds are "before", what a phase holds) are the current modules'; only the
algorithms are the old ones, so this stays an oracle when the definitions change."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from cachestorm.reports.latency import (
    PERCENTILES,
    _interval_in,
    _sent_in,
    _sum_counts,
    _worst_of,
    new_histogram,
    worst_second,
)
from cachestorm.reports.metrics import parse_series_name
from cachestorm.reports.phases import Phase
from hdrh.histogram import HdrHistogram

from cachestorm.core.runfiles import damaged, read_jsonl


class NaiveCounterSeries:
    """Samples per instance: [(t, {series: value})], sorted by t."""

    def __init__(self, samples_by_instance: dict[str, list[tuple[float, dict[str, float]]]]):
        # per instance, per sample: {metric name: [(labels, value)]}, parsed once
        self.samples = {
            instance: [(t, _by_name(metrics)) for t, metrics in sorted(samples, key=lambda x: x[0])]
            for instance, samples in samples_by_instance.items()}

    @classmethod
    def from_metrics(cls, records: list[dict]) -> NaiveCounterSeries:
        by_instance: dict[str, list] = defaultdict(list)
        for record in records:
            if record.get("t") is not None and isinstance(record.get("metrics"), dict):
                by_instance[str(record.get("instance", ""))].append((float(record["t"]), record["metrics"]))
        return cls(by_instance)

    @classmethod
    def from_pg_stats(cls, records: list[dict]) -> NaiveCounterSeries:
        samples = [(float(r["t"]), {k: v for k, v in r.items() if k not in ("t", "wall") and _number(v)})
                   for r in records if r.get("t") is not None]
        return cls({"postgres": samples})

    def has(self, name: str, **labels: str) -> bool:
        return any(self._value(metrics, name, labels) is not None
                   for samples in self.samples.values() for _, metrics in samples)

    @staticmethod
    def _value(metrics: dict[str, list], name: str, labels: dict[str, str]) -> float | None:
        series = metrics.get(name)
        if not series:
            return None
        wanted = set(labels.items())
        matching = [value for series_labels, value in series if wanted <= series_labels]
        return float(sum(matching)) if matching else None

    def _steps(self, name: str, labels: dict[str, str]):
        """(t_prev, t, increase) per consecutive pair of samples of each instance."""
        for samples in self.samples.values():
            previous = None
            for t, metrics in samples:
                # a labelled series appears on first use: absent means zero so far
                value = self._value(metrics, name, labels) or 0.0
                if previous is not None and t > previous[0]:
                    increase = value - previous[1] if value >= previous[1] else value
                    yield previous[0], t, increase
                previous = (t, value)

    def rate(self, name: str, **labels: str) -> list[tuple[int, float]]:
        """Per-second rate, summed over instances: [(second, per_s)], seconds as ints."""
        per_second: dict[int, float] = defaultdict(float)
        for t0, t1, increase in self._steps(name, labels):
            per_second[int(math.floor(t1 - 1e-9))] += increase / (t1 - t0)
        return sorted(per_second.items())

    def increase(self, name: str, t_from: float = -math.inf, t_to: float = math.inf, **labels: str) -> float:
        """Total increase over the sample intervals that overlap [t_from, t_to]."""
        return sum(inc for t0, t1, inc in self._steps(name, labels) if t1 > t_from and t0 < t_to)

    def increase_within(self, name: str, t_from: float, t_to: float, **labels: str) -> float:
        """Total increase over the sample intervals that lie entirely inside [t_from, t_to]."""
        return sum(inc for t0, t1, inc in self._steps(name, labels) if t0 >= t_from and t1 <= t_to)

    def at_first_sample(self, name: str, **labels: str) -> float:
        """The counter's value at each instance's first sample, summed (what it counted before scraping began)."""
        return sum(self._value(samples[0][1], name, labels) or 0.0 for samples in self.samples.values() if samples)

    def span(self) -> tuple[float, float] | None:
        times = [t for samples in self.samples.values() for t, _ in samples]
        return (min(times), max(times)) if times else None

    def label_values(self, name: str, label: str) -> list[str]:
        found = set()
        for samples in self.samples.values():
            for _, metrics in samples:
                for series_labels, _ in metrics.get(name, ()):
                    found.update(v for k, v in series_labels if k == label)
        return sorted(found)


    # the methods the fast class added, done the old way (every sample scanned)
    def times(self) -> list[float]:
        return [t for samples in self.samples.values() for t, _ in samples]

    def gauge(self, name: str) -> list[tuple[int, float]]:
        points = []
        for samples in self.samples.values():
            for t, metrics in samples:
                values = metrics.get(name)
                if values:
                    points.append((int(math.floor(t)), float(sum(v for _, v in values))))
        return points

    def samples_with(self, name: str, t_from: float, t_to: float) -> int:
        return sum(1 for samples in self.samples.values() for t, metrics in samples
                   if t_from <= t <= t_to and name in metrics)

    def increases_by_label(self, name: str, label: str, windows) -> dict[str, list[float]]:
        return {value: [self.increase(name, t_from, t_to, **{label: value}) for t_from, t_to in windows]
                for value in self.label_values(name, label)}


def _by_name(metrics: dict[str, float]) -> dict[str, list[tuple[frozenset, float]]]:
    grouped: dict[str, list[tuple[frozenset, float]]] = defaultdict(list)
    for series, value in metrics.items():
        if _number(value):
            name, labels = parse_series_name(series)
            grouped[name].append((labels, float(value)))
    return grouped


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def naive_summarize(histogram: HdrHistogram | None) -> dict | None:
    """Percentiles in milliseconds of a histogram of microseconds."""
    if histogram is None or histogram.get_total_count() == 0:
        return None
    values = histogram.get_percentile_to_value_dict([q for _, q in PERCENTILES])
    summary = {"count": histogram.get_total_count()}
    for name, q in PERCENTILES:
        summary[name] = round(values[q] / 1000.0, 3)
    summary["max_ms"] = round(histogram.get_max_value() / 1000.0, 3)
    summary["mean_ms"] = round(_mean_us(histogram) / 1000.0, 3)
    return summary


def _mean_us(histogram: HdrHistogram) -> float:
    """The mean over non-empty buckets (hdrh's get_mean_value walks every bucket in Python: slow)."""
    counts = histogram.counts
    total = weighted = 0
    for index in [i for i, count in enumerate(counts[: histogram.counts_len]) if count]:
        count = counts[index]
        total += count
        weighted += count * histogram.get_highest_equivalent_value(histogram.get_value_from_index(index))
    return weighted / total if total else 0.0


def naive_from_hdr(files: list[Path], phases: list[Phase]) -> dict | None:
    per_second: dict[str, dict[int, HdrHistogram]] = defaultdict(dict)  # kind -> second -> merged
    counts: dict[str, int] = defaultdict(int)  # requests, attempts, sent, late, dropped, timeouts... (locustfiles)
    counts_per_second: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    ends: dict[int, float] = {}  # second -> the true end of that interval (recorders start off the second)
    middles: dict[int, float] = {}  # second -> the middle of that interval: where its counted sends belong
    for path in files:
        with damaged(path):  # a broken histogram encoding or a wrong type: one line naming the file
            for record in read_jsonl(path):
                t = record.get("t")
                for name, n in (record.get("counts") or {}).items():
                    if isinstance(n, int | float):
                        counts[name] += n
                        if t is not None:
                            counts_per_second[int(math.floor(float(t)))][name] += n
                if t is not None:
                    middles[int(math.floor(float(t)))] = float(t) + float(record.get("interval_s") or 1.0) / 2
                encoded = record.get("hist")
                if not encoded or t is None:
                    continue
                kind = str(record.get("kind") or "all")
                second = int(math.floor(float(t)))
                ends[second] = max(ends.get(second, 0.0), float(t) + float(record.get("interval_s") or 1.0))
                decoded = HdrHistogram.decode(encoded)
                bucket = per_second[kind].get(second)
                if bucket is None:
                    bucket = per_second[kind][second] = new_histogram()
                bucket.add(decoded)
    if not per_second:
        return None
    # "all" records already contain reads and writes; merge kinds only when there are none.
    # send_lag (open model: actual minus intended send time) is not a response time.
    overall_seconds = per_second.get("all") or _merge_kinds(
        {kind: seconds for kind, seconds in per_second.items() if kind != "send_lag"})
    series = []
    for second in sorted(overall_seconds):
        summary = naive_summarize(overall_seconds[second])
        if summary:
            series.append({"t": second, **summary})
    during = [p for p in phases if p.kind == "during"]
    worst = {phase.name: worst_second(p for p in series if _interval_in(phase, p["t"], ends)) for phase in during}
    return {
        "source": "hdr",
        "approximate": False,
        "overall": naive_summarize(_merge(overall_seconds.values())),
        "by_kind": {kind: naive_summarize(_merge(seconds.values()))
                    for kind, seconds in sorted(per_second.items()) if kind != "all"},
        "by_phase": {phase.name: naive_summarize(_merge(h for s, h in overall_seconds.items()
                                                  if _interval_in(phase, s, ends)))
                     for phase in phases},
        "during_fault": naive_summarize(_merge(h for s, h in overall_seconds.items()
                                         if any(p.kind == "during" and _interval_in(p, s, ends) for p in phases))),
        "worst_second_by_phase": worst,
        "during_fault_worst_second": _worst_of(worst.values()),
        "series": series,
        "counts": dict(counts),
        "counts_by_phase": {phase.name: _sum_counts(c for s, c in counts_per_second.items() if _sent_in(phase, s, middles))
                            for phase in phases},
        "counts_by_second": [{"t": second, **counts} for second, counts in sorted(counts_per_second.items())],
        "counts_during_fault": _sum_counts(c for s, c in counts_per_second.items()
                                           if any(p.kind == "during" and _sent_in(p, s, middles) for p in phases)),
    }


def _merge_kinds(per_second: dict[str, dict[int, HdrHistogram]]) -> dict[int, HdrHistogram]:
    merged: dict[int, HdrHistogram] = {}
    for seconds in per_second.values():
        for second, histogram in seconds.items():
            merged.setdefault(second, new_histogram()).add(histogram)
    return merged


def _merge(histograms) -> HdrHistogram | None:
    total = None
    for histogram in histograms:
        if total is None:
            total = new_histogram()
        total.add(histogram)
    return total


