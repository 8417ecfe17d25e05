"""Latency: merge HDR histograms losslessly (per second, per phase, overall), or fall back to Locust.

Sources, best first: `latency/merged.jsonl`, then `latency/*.jsonl` (per worker),
then Locust's `stats_history.csv` (per-second percentiles rounded to ~2 digits,
which cannot be merged, so a phase's percentile there is the worst second's).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections import defaultdict
from ctypes import addressof, string_at
from itertools import accumulate, compress
from operator import mul
from pathlib import Path

from cachestorm.reports.phases import Phase
from hdrh.histogram import HdrHistogram

from cachestorm.core.runfiles import damaged, iter_jsonl
from cachestorm.core.runfolder import RunFolder

LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS = 1, 60_000_000, 3
PERCENTILES = (("p50_ms", 50.0), ("p90_ms", 90.0), ("p99_ms", 99.0), ("p999_ms", 99.9))
# a second with fewer responses than this is not a percentile worth reporting as "the worst second"
MIN_SECOND_REQUESTS = 10
# Work done, for the test that the report's cost grows linearly with the run: histograms decoded and added
WORK = {"histograms": 0}
_LOCUST_COLUMNS = (("p50_ms", "50%"), ("p90_ms", "90%"), ("p99_ms", "99%"), ("p999_ms", "99.9%"),
                   ("max_ms", "100%"))


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def summarize(histogram: HdrHistogram | None) -> dict | None:
    """Percentiles in milliseconds of a histogram of microseconds."""
    if histogram is None or histogram.get_total_count() == 0:
        return None
    indexes, counts = _nonzero(histogram)
    values = _percentiles(histogram, indexes, counts)
    summary = {"count": histogram.get_total_count()}
    for name, q in PERCENTILES:
        summary[name] = round(values[q] / 1000.0, 3)
    summary["max_ms"] = round(histogram.get_max_value() / 1000.0, 3)
    summary["mean_ms"] = round(_mean_us(histogram, indexes, counts) / 1000.0, 3)
    return summary


_TABLES: dict[tuple, list[int]] = {}


def _highest_values(histogram: HdrHistogram) -> list[int]:
    """Per counts index, the highest value equivalent to it (what hdrh reports for a percentile that
    lands there); computed once per histogram layout."""
    layout = (histogram.counts_len, histogram.sub_bucket_half_count_magnitude, histogram.unit_magnitude,
              histogram.sub_bucket_count)
    table = _TABLES.get(layout)
    if table is None:
        table = _TABLES[layout] = [histogram.get_highest_equivalent_value(histogram.get_value_from_index(i))
                                   for i in range(histogram.counts_len)]
    return table


def _nonzero(histogram: HdrHistogram) -> tuple[list[int], list[int]]:
    """The indexes of the non-zero counts, ascending, and those counts, found at C speed: up to the
    index of the tracked maximum when the counts there add up to the total, else in the whole array."""
    total = histogram.get_total_count()
    top = histogram.get_max_value()
    last = min(histogram.counts_len, len(histogram.counts)) - 1
    if top and histogram.word_size == _WORDS.itemsize:
        last = min(last, histogram._counts_index_for(top))
    for end in (last, min(histogram.counts_len, len(histogram.counts)) - 1):
        raw = string_at(addressof(histogram.counts), (end + 1) * histogram.word_size)
        first = (len(raw) - len(raw.lstrip(b"\0"))) // histogram.word_size
        words = array(_WORDS.typecode)
        words.frombytes(raw[first * histogram.word_size:])
        counts = list(filter(None, words))
        if sum(counts) == total:
            break
    return list(compress(range(first, end + 1), words)), counts


_WORDS = array("Q")


def _percentiles(histogram: HdrHistogram, indexes: list[int], counts: list[int]) -> dict[float, int]:
    """hdrh's get_percentile_to_value_dict (the first index whose running count reaches each percentile's
    target count: always one with a non-zero count), by bisection of the running sum of the non-zero
    counts instead of a Python loop over every index."""
    running = list(accumulate(counts))
    table = _highest_values(histogram)
    result = {}
    for _, q in PERCENTILES:
        n = bisect_left(running, histogram.get_target_count_at_percentile(q))
        if n < len(running):
            result[q] = table[indexes[n]]
    if len(result) < len(PERCENTILES):  # counts and total disagree: hdrh's own walk decides
        return histogram.get_percentile_to_value_dict([q for _, q in PERCENTILES])
    return result


def _mean_us(histogram: HdrHistogram, indexes: list[int] | None = None, counts: list[int] | None = None) -> float:
    """The mean over non-empty buckets (hdrh's get_mean_value walks every bucket in Python: slow)."""
    if counts is None:
        indexes, counts = _nonzero(histogram)
    total = sum(counts)
    weighted = sum(map(mul, counts, map(_highest_values(histogram).__getitem__, indexes)))
    return weighted / total if total else 0.0


def analyze_latency(run_dir: str | Path, phases: list[Phase], started_at: float | None) -> dict:
    run_dir = Path(run_dir)
    files = RunFolder(run_dir).latency_files()
    if files:
        result = _from_hdr(files, phases)
        if result is not None:
            result["files"] = [str(p.relative_to(run_dir)) for p in files]
            return result
    return _from_locust(run_dir, phases, started_at)


def _from_hdr(files: list[Path], phases: list[Phase]) -> dict | None:
    # kind -> second -> [(file, encoded histogram)]: the encodings are small, a decoded histogram is not
    # (~140 kB), so a second's histograms are decoded, summarized and folded into the totals, then dropped
    encoded_by_kind: dict[str, dict[int, list[tuple[Path, str]]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[str, int] = defaultdict(int)  # requests, attempts, sent, late, dropped, timeouts... (locustfiles)
    counts_per_second: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    ends: dict[int, float] = {}  # second -> the true end of that interval (recorders start off the second)
    middles: dict[int, float] = {}  # second -> the middle of that interval: where its counted sends belong
    for path in files:
        with damaged(path):  # a wrong type: one line naming the file
            for record in iter_jsonl(path):
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
                encoded_by_kind[kind][second].append((path, encoded))
    if not encoded_by_kind:
        return None
    # "all" records already contain reads and writes; merge kinds only when there are none.
    # send_lag (open model: actual minus intended send time) is not a response time.
    overall_kinds = ["all"] if "all" in encoded_by_kind else [k for k in encoded_by_kind if k != "send_lag"]
    in_phase = {phase.name: set() for phase in phases}
    totals: dict[str, HdrHistogram] = {}  # "overall", "kind:<kind>", "phase:<name>", "during"
    series = []
    seconds = sorted({second for by_second in encoded_by_kind.values() for second in by_second})
    current = files[0]
    try:
        for second in seconds:
            per_kind = {}
            for kind, by_second in encoded_by_kind.items():
                if second in by_second:
                    records = by_second[second]
                    WORK["histograms"] += len(records)
                    current = records[0][0]
                    histogram = HdrHistogram.decode(records[0][1])
                    if len(records) > 1 or _layout(histogram) != _layout(_REFERENCE):
                        # several recorders' (or a foreign layout): merged into one of ours, as before
                        merged = new_histogram()
                        merged.add(histogram)
                        for path, encoded in records[1:]:
                            current = path
                            merged.add(HdrHistogram.decode(encoded))
                        histogram = merged
                    per_kind[kind] = histogram
                    if kind != "all":
                        _fold(totals, "kind:" + kind, histogram)
            present = [per_kind[kind] for kind in overall_kinds if kind in per_kind]
            if not present:
                continue
            if overall_kinds == ["all"]:
                overall = present[0]
            else:
                overall = new_histogram()
                for histogram in present:
                    overall.add(histogram)
            summary = summarize(overall)
            if summary:
                series.append({"t": second, **summary})
            _fold(totals, "overall", overall)
            during = False
            for phase in phases:
                if _interval_in(phase, second, ends):
                    in_phase[phase.name].add(second)
                    _fold(totals, "phase:" + phase.name, overall)
                    during |= phase.kind == "during"
            if during:
                _fold(totals, "during", overall)
    except Exception as exc:  # a broken histogram encoding: one line naming its file
        with damaged(current):
            raise exc
    during = [p for p in phases if p.kind == "during"]
    worst = {phase.name: worst_second(p for p in series if p["t"] in in_phase[phase.name]) for phase in during}
    return {
        "source": "hdr",
        "approximate": False,
        "overall": summarize(totals.get("overall")),
        "by_kind": {kind: summarize(totals.get("kind:" + kind))
                    for kind in sorted(encoded_by_kind) if kind != "all"},
        "by_phase": {phase.name: summarize(totals.get("phase:" + phase.name)) for phase in phases},
        "during_fault": summarize(totals.get("during")),
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


_REFERENCE = new_histogram()


def _layout(histogram: HdrHistogram) -> tuple:
    """What makes two histograms' counts arrays the same: one decoded in our layout with its full counts
    array is what adding it to a new histogram would give (same counts, total and maximum)."""
    return (histogram.counts_len, len(histogram.counts), histogram.bucket_count, histogram.sub_bucket_count,
            histogram.unit_magnitude, histogram.word_size, histogram.lowest_trackable_value,
            histogram.highest_trackable_value, histogram.significant_figures)


def _fold(totals: dict[str, HdrHistogram], name: str, histogram: HdrHistogram) -> None:
    WORK["histograms"] += 1
    total = totals.get(name)
    if total is None:
        total = totals[name] = new_histogram()
    total.add(histogram)


def worst_second(points) -> dict | None:
    """The second with the highest p99 (and, separately, the highest p99.9) among seconds with at least
    MIN_SECOND_REQUESTS responses: a 1 s stampede is not diluted by the quiet seconds around it."""
    points = [p for p in points if p.get("p99_ms") is not None and (p.get("count") or 0) >= MIN_SECOND_REQUESTS]
    if not points:
        return None
    p99 = max(points, key=lambda p: p["p99_ms"])
    p999 = max(points, key=lambda p: p.get("p999_ms") or 0.0)
    return {"t": p99["t"], "p99_ms": p99["p99_ms"], "count": p99["count"], "t_p999": p999["t"],
            "p999_ms": p999.get("p999_ms")}


def _worst_of(rows) -> dict | None:
    rows = [r for r in rows if r]
    if not rows:
        return None
    p99 = max(rows, key=lambda r: r["p99_ms"])
    p999 = max(rows, key=lambda r: r.get("p999_ms") or 0.0)
    return {**p99, "t_p999": p999["t_p999"], "p999_ms": p999["p999_ms"]}


def _sum_counts(per_second) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for counts in per_second:
        for name, n in counts.items():
            total[name] += n
    return dict(total)


def _interval_in(phase: Phase, second: int, ends: dict[int, float]) -> bool:
    """An interval belongs to the phase holding its end: a fault's effect starts inside the interval
    that contains the fault's start, so that interval counts as "during", never as "before"."""
    end = ends.get(second)
    return phase.contains_second(second) if end is None else phase.contains(end - 1e-6)


def _sent_in(phase: Phase, second: int, middles: dict[int, float]) -> bool:
    """Counts (attempts, requests, failures) are binned by when they were sent: an interval's belong to
    the phase holding its middle. By its end (latency's rule) a fault window's counts would take in
    the part of an interval sent before the fault started and leave out its last interval's part."""
    middle = middles.get(second)
    return phase.contains_second(second) if middle is None else phase.contains(middle)


def _from_locust(run_dir: Path, phases: list[Phase], started_at: float | None) -> dict:
    folder = RunFolder(run_dir)
    history = [row for row in folder.locust_csv("stats_history") if row.get("Name") == "Aggregated"]
    totals = next((row for row in folder.locust_csv("stats") if row.get("Name") == "Aggregated"), None)
    if not history and totals is None:
        return {"source": None, "approximate": False, "overall": None, "by_kind": {}, "by_phase": {},
                "during_fault": None, "worst_second_by_phase": {}, "during_fault_worst_second": None,
                "series": [], "counts": {}}
    start = started_at if started_at is not None else min((finite_float(r.get("Timestamp")) or 0) for r in history)
    series = []
    for row in history:
        stamp = finite_float(row.get("Timestamp"))
        point = {name: finite_float(row.get(column)) for name, column in _LOCUST_COLUMNS}
        if stamp is None or point["p99_ms"] is None:
            continue
        point["count"] = None
        series.append({"t": int(stamp - start), **point})
    overall = None
    if totals is not None:
        overall = {name: finite_float(totals.get(column)) for name, column in _LOCUST_COLUMNS}
        overall["count"] = int(finite_float(totals.get("Request Count")) or 0)
        overall["mean_ms"] = finite_float(totals.get("Average Response Time"))
    return {
        "source": "locust",
        "approximate": True,
        "overall": overall,
        "by_kind": {},
        "by_phase": {phase.name: _worst(p for p in series if phase.contains_second(p["t"])) for phase in phases},
        "during_fault": _worst(p for p in series if any(ph.kind == "during" and ph.contains_second(p["t"]) for ph in phases)),
        # Locust's per-second rows carry no count: every second counts
        "worst_second_by_phase": (worst := {
            ph.name: _worst_locust_second(p for p in series if ph.contains_second(p["t"]))
            for ph in phases if ph.kind == "during"}),
        "during_fault_worst_second": _worst_of(worst.values()),
        "series": series,
        "counts": {},
    }


def _worst_locust_second(points) -> dict | None:
    return worst_second({**p, "count": MIN_SECOND_REQUESTS} for p in points)


def _worst(points) -> dict | None:
    """Locust's per-second percentiles cannot be merged: a phase gets its worst second."""
    points = list(points)
    if not points:
        return None
    worst = {name: max((p[name] for p in points if p[name] is not None), default=None)
             for name, _ in _LOCUST_COLUMNS}
    worst["count"] = None
    return worst


def finite_float(value) -> float | None:
    """A CSV cell as a finite float; None when empty, not a number, inf or NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
