"""Counter series from the 1 s scrapes (`metrics.jsonl`, `pg_stats.jsonl`): rates and increases.

Counters are summed over instances and matching labels; a value that goes down is a
restart (counter reset), so the new value counts as the increase.

Storage is columnar: per instance, the sample times and one array of values per series (NaN where a
sample lacks it), filled in one pass over the file; the steps (t_prev, t, increase) of a (name, labels)
query are computed once and kept, so a per-second series is one pass and an increase over a window is
two bisections and a sum over the steps inside it (no rescan of the run per second).
"""

from __future__ import annotations

import math
import re
from array import array
from bisect import bisect_left, bisect_right
from collections import defaultdict
from functools import lru_cache
from itertools import chain

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_ABSENT = math.nan

# Work done, for the test that the report's cost grows linearly with the run (tests/test_report_speed.py):
# sample values read while building series, and steps visited by rates and increases.
WORK = {"values": 0, "steps": 0}


@lru_cache(maxsize=4096)
def parse_series_name(series: str) -> tuple[str, frozenset]:
    """`name{a="1",b="2"}` -> ("name", {("a", "1"), ("b", "2")})."""
    name, brace, rest = series.partition("{")
    if not brace:
        return series.strip(), frozenset()
    return name.strip(), frozenset(_LABEL.findall(rest))


class _Instance:
    """One instance's samples: times (sorted) and, per metric name, [(labels, values)] in order of first
    appearance, each values array as long as times (NaN: not in that sample)."""

    __slots__ = ("times", "columns", "_by_series", "_length", "_step_times")

    def __init__(self):
        self.times = array("d")
        self._step_times = None
        self.columns: dict[str, list[tuple[frozenset, array]]] = {}
        self._by_series: dict[str, array] = {}
        self._length = 0

    def append(self, t: float, metrics: dict) -> None:
        n = self._length
        for series, value in metrics.items():
            kind = value.__class__
            if kind is float:
                if value - value != 0.0:  # inf or NaN
                    continue
            elif kind is not int and not _number(value):
                continue
            column = self._by_series.get(series)
            if column is None:
                name, labels = parse_series_name(series)
                column = self._by_series[series] = array("d", [_ABSENT]) * n
                self.columns.setdefault(name, []).append((labels, column))
            column.append(float(value))
        self._length = n = n + 1
        self.times.append(t)
        for column in self._by_series.values():
            if len(column) < n:
                column.append(_ABSENT)

    def finish(self) -> None:
        """Sort by time (stable, as the samples were) once all are in."""
        times = self.times
        if all(times[i] <= times[i + 1] for i in range(len(times) - 1)):
            return
        order = sorted(range(len(times)), key=times.__getitem__)
        self.times = array("d", (times[i] for i in order))
        for column in self._by_series.values():
            column[:] = array("d", (column[i] for i in order))

    def step_times(self) -> tuple[array, array, array]:
        """(t_prev, t) of each step and, per step, the index of its sample: a step is a pair of
        consecutive samples with t > t_prev; the same for every series of the instance."""
        if self._step_times is None:
            t0, t1, at = array("d"), array("d"), array("l")
            times = self.times
            for n in range(1, len(times)):
                if times[n] > times[n - 1]:
                    t0.append(times[n - 1])
                    t1.append(times[n])
                    at.append(n)
            self._step_times = (t0, t1, at)
        return self._step_times

    def matching(self, name: str, wanted: frozenset) -> list[array]:
        return [values for labels, values in self.columns.get(name, ()) if wanted <= labels]

    def values(self, name: str, wanted: frozenset) -> list[float | None]:
        """Per sample: the matching series' values summed, None where none is in the sample."""
        columns = self.matching(name, wanted)
        WORK["values"] += len(self.times) * max(1, len(columns))
        if not columns:
            return [None] * len(self.times)
        if len(columns) == 1:
            return [None if v != v else v for v in columns[0]]
        result = []
        for row in zip(*columns, strict=True):
            present = [v for v in row if v == v]
            result.append(float(sum(present)) if present else None)
        return result


class _Steps:
    """(t_prev, t, increase) per consecutive pair of samples of one instance, as three arrays."""

    __slots__ = ("t0", "t1", "inc")

    def __init__(self, store: _Instance, values: list[float | None]):
        self.t0, self.t1, at = store.step_times()
        # a labelled series appears on first use: absent means zero so far
        self.inc = inc = array("d")
        for n in at:
            value, previous = values[n] or 0.0, values[n - 1] or 0.0
            inc.append(value - previous if value >= previous else value)

    def bounds(self, t_from: float, t_to: float) -> tuple[int, int]:
        """The steps with t1 > t_from and t0 < t_to (t0 and t1 both ascend): [lo, hi)."""
        return bisect_right(self.t1, t_from), bisect_left(self.t0, t_to)

    def overlapping(self, t_from: float, t_to: float) -> array:
        """The increases of the intervals with t1 > t_from and t0 < t_to."""
        lo, hi = self.bounds(t_from, t_to)
        return self.inc[lo:hi] if lo < hi else ()

    def inside(self, t_from: float, t_to: float) -> array:
        """The increases of the intervals with t0 >= t_from and t1 <= t_to."""
        lo, hi = bisect_left(self.t0, t_from), bisect_right(self.t1, t_to)
        return self.inc[lo:hi] if lo < hi else ()


class CounterSeries:
    """Samples per instance: [(t, {series: value})], sorted by t."""

    def __init__(self, samples_by_instance: dict[str, list[tuple[float, dict[str, float]]]] | None = None):
        self._instances: dict[str, _Instance] = {}
        self._steps_cache: dict[tuple[str, frozenset], list[_Steps]] = {}
        self._samples_view = None
        for instance, samples in (samples_by_instance or {}).items():
            for t, metrics in samples:
                self._add(instance, float(t), metrics)
        self._finish()

    def _add(self, instance: str, t: float, metrics: dict) -> None:
        store = self._instances.get(instance)
        if store is None:
            store = self._instances[instance] = _Instance()
        store.append(t, metrics)

    def _finish(self) -> None:
        for store in self._instances.values():
            store.finish()

    @classmethod
    def from_metrics(cls, records) -> CounterSeries:
        """From metrics.jsonl's records (any iterable: a streaming reader keeps one record in memory)."""
        series = cls()
        for record in records:
            if record.get("t") is not None and isinstance(record.get("metrics"), dict):
                series._add(str(record.get("instance", "")), float(record["t"]), record["metrics"])
        series._finish()
        return series

    @classmethod
    def from_pg_stats(cls, records) -> CounterSeries:
        series = cls()
        for r in records:
            if r.get("t") is not None:
                series._add("postgres", float(r["t"]), {k: v for k, v in r.items() if k not in ("t", "wall")})
        series._finish()
        return series

    @property
    def samples(self) -> dict[str, list[tuple[float, dict[str, list[tuple[frozenset, float]]]]]]:
        """The samples as [(t, {name: [(labels, value)]})] per instance (built on first use, for callers
        that walk every sample themselves; the methods below do not need it)."""
        if self._samples_view is None:
            view = {}
            for instance, store in self._instances.items():
                rows = []
                for n, t in enumerate(store.times):
                    grouped = {}
                    for name, columns in store.columns.items():
                        present = [(labels, values[n]) for labels, values in columns if values[n] == values[n]]
                        if present:
                            grouped[name] = present
                    rows.append((t, grouped))
                view[instance] = rows
            self._samples_view = view
        return self._samples_view

    def has(self, name: str, **labels: str) -> bool:
        wanted = frozenset(labels.items())
        return any(store.matching(name, wanted) for store in self._instances.values())

    def _steps(self, name: str, labels: dict[str, str]):
        """(t_prev, t, increase) per consecutive pair of samples of each instance."""
        for steps in self._step_arrays(name, labels):
            WORK["steps"] += len(steps.inc)
            yield from zip(steps.t0, steps.t1, steps.inc, strict=True)

    def _step_arrays(self, name: str, labels: dict[str, str]) -> list[_Steps]:
        key = (name, frozenset(labels.items()))
        steps = self._steps_cache.get(key)
        if steps is None:
            steps = self._steps_cache[key] = [_Steps(store, store.values(name, key[1]))
                                              for store in self._instances.values()]
        return steps

    def rate(self, name: str, **labels: str) -> list[tuple[int, float]]:
        """Per-second rate, summed over instances: [(second, per_s)], seconds as ints."""
        per_second: dict[int, float] = defaultdict(float)
        floor = math.floor
        for steps in self._step_arrays(name, labels):
            WORK["steps"] += len(steps.inc)
            for t0, t1, increase in zip(steps.t0, steps.t1, steps.inc, strict=True):
                per_second[int(floor(t1 - 1e-9))] += increase / (t1 - t0)
        return sorted(per_second.items())

    def increase(self, name: str, t_from: float = -math.inf, t_to: float = math.inf, **labels: str) -> float:
        """Total increase over the sample intervals that overlap [t_from, t_to]."""
        parts = [steps.overlapping(t_from, t_to) for steps in self._step_arrays(name, labels)]
        WORK["steps"] += sum(len(part) for part in parts)
        return sum(chain.from_iterable(parts))

    def increases_by_label(self, name: str, label: str, windows: list[tuple[float, float]]) -> dict[str, list[float]]:
        """For each value of `label`, the increase over each window: what increase(name, t_from, t_to,
        label=value) gives for each (t_from, t_to), the windows' step ranges found once for all values."""
        values = self.label_values(name, label)
        if not values:
            return {}
        first = self._step_arrays(name, {label: values[0]})
        ranges = [[steps.bounds(t_from, t_to) for t_from, t_to in windows] for steps in first]
        result = {}
        for value in values:
            incs = [steps.inc for steps in self._step_arrays(name, {label: value})]
            totals = []
            for w in range(len(windows)):
                parts = [inc[r[w][0]:r[w][1]] for inc, r in zip(incs, ranges, strict=True)]
                WORK["steps"] += sum(len(part) for part in parts)
                totals.append(sum(chain.from_iterable(parts)))
            result[value] = totals
        return result

    def increase_within(self, name: str, t_from: float, t_to: float, **labels: str) -> float:
        """Total increase over the sample intervals that lie entirely inside [t_from, t_to]."""
        parts = [steps.inside(t_from, t_to) for steps in self._step_arrays(name, labels)]
        WORK["steps"] += sum(len(part) for part in parts)
        return sum(chain.from_iterable(parts))

    def at_first_sample(self, name: str, **labels: str) -> float:
        """The counter's value at each instance's first sample, summed (what it counted before scraping began)."""
        wanted = frozenset(labels.items())
        total = 0
        for store in self._instances.values():
            if len(store.times):
                present = [values[0] for values in store.matching(name, wanted) if values[0] == values[0]]
                total += float(sum(present)) if present else 0.0
        return total

    def times(self) -> list[float]:
        """Every sample's time, instance after instance."""
        return [t for store in self._instances.values() for t in store.times]

    def span(self) -> tuple[float, float] | None:
        times = self.times()
        return (min(times), max(times)) if times else None

    def gauge(self, name: str) -> list[tuple[int, float]]:
        """(second, value summed over the name's series) for each sample holding the name."""
        points = []
        for store in self._instances.values():
            columns = store.matching(name, frozenset())
            WORK["values"] += len(store.times) * len(columns)
            for t, row in zip(store.times, zip(*columns, strict=True), strict=True) if columns else ():
                present = [v for v in row if v == v]
                if present:
                    points.append((int(math.floor(t)), float(sum(present))))
        return points

    def samples_with(self, name: str, t_from: float, t_to: float) -> int:
        """How many samples in [t_from, t_to] hold the name."""
        count = 0
        for store in self._instances.values():
            columns = store.matching(name, frozenset())
            for n, t in enumerate(store.times):
                if t_from <= t <= t_to and any(values[n] == values[n] for values in columns):
                    count += 1
        return count

    def label_values(self, name: str, label: str) -> list[str]:
        found = set()
        for store in self._instances.values():
            for series_labels, _ in store.columns.get(name, ()):
                found.update(v for k, v in series_labels if k == label)
        return sorted(found)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
