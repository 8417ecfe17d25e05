"""What "hit ratio" means, wherever it is shown (chaos probes, reports, charts): of the cache lookups,
the share served from the cache without a DB load for that read — a fresh hit, a stale serve or a
cached absence. Reads sent past the cache (bypass) are no lookups. The fresh hit ratio counts hits only
(a stale-while-revalidate cache serves much of its traffic stale). A lookup that failed (no pool connection,
Redis gone) counts as a lookup not served from the cache.

The targets count each read's result in cachestorm_cache_results_total{result, key_class}.
"""

from __future__ import annotations

from collections.abc import Mapping

RESULTS_METRIC = "cachestorm_cache_results_total"
FAILED = "failed"  # a lookup that ended in an error: no answer, so not served from the cache
RESULTS = ("hit", "miss", "stale", "bypass", "negative", "fallback", FAILED)  # where a read was answered from
SERVED_FROM_CACHE = ("hit", "stale", "negative")
NOT_LOOKUPS = ("bypass",)


def lookups(counts: Mapping[str, float]) -> float:
    """Reads that looked in the cache, from counts by result."""
    return sum(value for result, value in counts.items() if result not in NOT_LOOKUPS)


def served_from_cache(counts: Mapping[str, float]) -> float:
    """Lookups served from the cache without a DB load, from counts by result."""
    return sum(counts.get(result, 0.0) for result in SERVED_FROM_CACHE)


def hit_ratio(counts: Mapping[str, float]) -> float | None:
    """Lookups served from the cache / lookups; None without lookups."""
    total = lookups(counts)
    return served_from_cache(counts) / total if total else None


def fresh_hit_ratio(counts: Mapping[str, float]) -> float | None:
    """Lookups answered by a fresh entry / lookups; None without lookups."""
    total = lookups(counts)
    return counts.get("hit", 0.0) / total if total else None
