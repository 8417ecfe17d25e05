"""Counter series from the 1 s scrapes (`metrics.jsonl`, `pg_stats.jsonl`): rates and increases.

Counters are summed over instances and matching labels; a value that goes down is a
restart (counter reset), so the new value counts as the increase.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from functools import lru_cache

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@lru_cache(maxsize=4096)
def parse_series_name(series: str) -> tuple[str, frozenset]:
    """`name{a="1",b="2"}` -> ("name", {("a", "1"), ("b", "2")})."""
    name, brace, rest = series.partition("{")
    if not brace:
        return series.strip(), frozenset()
    return name.strip(), frozenset(_LABEL.findall(rest))


class CounterSeries:
    """Samples per instance: [(t, {series: value})], sorted by t."""

    def __init__(self, samples_by_instance: dict[str, list[tuple[float, dict[str, float]]]]):
        # per instance, per sample: {metric name: [(labels, value)]}, parsed once
        self.samples = {
            instance: [(t, _by_name(metrics)) for t, metrics in sorted(samples, key=lambda x: x[0])]
            for instance, samples in samples_by_instance.items()}

    @classmethod
    def from_metrics(cls, records: list[dict]) -> CounterSeries:
        by_instance: dict[str, list] = defaultdict(list)
        for record in records:
            if record.get("t") is not None and isinstance(record.get("metrics"), dict):
                by_instance[str(record.get("instance", ""))].append((float(record["t"]), record["metrics"]))
        return cls(by_instance)

    @classmethod
    def from_pg_stats(cls, records: list[dict]) -> CounterSeries:
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


def _by_name(metrics: dict[str, float]) -> dict[str, list[tuple[frozenset, float]]]:
    grouped: dict[str, list[tuple[frozenset, float]]] = defaultdict(list)
    for series, value in metrics.items():
        if _number(value):
            name, labels = parse_series_name(series)
            grouped[name].append((labels, float(value)))
    return grouped


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
