"""Errors by kind and attempts per logical request, from histories and Locust's failures.csv."""

from __future__ import annotations

from collections import Counter, defaultdict

from cachestorm.reports.history import History
from cachestorm.reports.metrics import CounterSeries

NS = 1_000_000_000
# failures.csv text -> kind; first match wins, so specific before generic
_FAILURE_PATTERNS = (
    ("pool_exhausted", ("pool_timeout", "pool exhausted", "pooltimeout")),
    ("db_unavailable", ("db_unavailable",)),
    ("cache_unavailable", ("cache_unavailable",)),
    ("timeout", ("timeout", "timed out")),
    ("conn_error", ("connection", "refused", "reset by peer", "connecterror", "remotedisconnected")),
    ("http_5xx", ("500", "501", "502", "503", "504")),
    ("http_4xx", ("400", "401", "403", "409", "429")),
)


def error_kind(status: str) -> str | None:
    """None for a success or a plain 404 (key absent), else the kind of error."""
    if status in ("timeout", "conn_error"):
        return status
    if len(status) == 3 and status.isdigit():
        if status[0] == "2" or status == "404":
            return None
        return f"http_{status[0]}xx"
    return "other"


def analyze_errors(history: History, t0_ns: int | None, failures: list[dict], metrics: CounterSeries,
                   locust_totals: dict | None) -> dict:
    kinds = {status: error_kind(status) for status in set(history.status)}
    by_kind: Counter = Counter()
    by_status: Counter = Counter()
    for status, count in Counter(history.status).items():
        if kinds[status]:
            by_kind[kinds[status]] += count
            by_status[status] += count
    total = len(history)
    series = _per_second(history, kinds, t0_ns) if total else []
    failure_kinds: Counter = Counter()
    for row in failures:
        failure_kinds[_failure_kind(row.get("Error", ""))] += int(float(row.get("Occurrences") or 0))
    pool_timeouts = metrics.increase("cachestorm_pool_timeouts_total")
    errors = sum(by_kind.values())
    # Locust saw every request; histories hold only the sampled keys (always the hot ones)
    if locust_totals and float(locust_totals.get("Request Count") or 0) > 0:
        rate = float(locust_totals.get("Failure Count") or 0) / float(locust_totals["Request Count"])
        source = "locust"
    elif total:
        rate, source = errors / total, "histories"
    else:
        rate, source = None, None
    return {
        "operations": total,
        "errors": errors,
        "error_rate": rate,
        "error_rate_source": source,
        "by_kind": dict(sorted(by_kind.items())),
        "by_status": dict(sorted(by_status.items())),
        "locust_failures_by_kind": dict(sorted(failure_kinds.items())),
        "pool_timeouts_reported_by_targets": pool_timeouts,
        "attempts": _attempts(history),
        "series": series,
    }


def _per_second(history: History, kinds: dict[str, str | None], t0_ns: int | None) -> list[dict]:
    t0 = t0_ns if t0_ns is not None else min(history.start_ns)
    operations = Counter((start - t0) // NS for start in history.start_ns)
    errors: dict[int, Counter] = defaultdict(Counter)
    for start, status in zip(history.start_ns, history.status, strict=True):
        kind = kinds[status]
        if kind:
            errors[(start - t0) // NS][kind] += 1
    return [{"t": int(second), "operations": count, "errors": sum(errors[second].values()),
             "by_kind": dict(errors[second])} for second, count in sorted(operations.items())]


def _attempts(history: History) -> dict | None:
    """Operations sharing a request_id are attempts (retries) of one logical request."""
    per_request = Counter(rid for rid in history.request_id if rid)
    if not per_request:
        return None
    distribution = Counter(per_request.values())
    attempts = sum(per_request.values())
    return {
        "logical_requests": len(per_request),
        "attempts": attempts,
        "mean_attempts": attempts / len(per_request),
        "max_attempts": max(distribution),
        "retried_requests": sum(n for k, n in distribution.items() if k > 1),
        "distribution": {str(k): n for k, n in sorted(distribution.items())},
    }


def _failure_kind(text: str) -> str:
    lowered = text.lower()
    for kind, needles in _FAILURE_PATTERNS:
        if any(needle in lowered for needle in needles):
            return kind
    return "other"
