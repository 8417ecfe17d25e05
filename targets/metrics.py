"""The target's Prometheus metrics (names are a contract: docs/design.md).

One registry per app, so several apps can live in one process (tests). Labelled children
are resolved once and cached, which keeps the cache-hit path to a dict lookup and an add.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# 1 ms .. ~30 s in steps of 20%: a p99 read from bucket increases is within ~10% of the truth
DB_QUERY_BUCKETS = tuple(round(0.001 * 1.2 ** i, 6) for i in range(57))


class Metrics:
    def __init__(self, hot_keys: int):
        self.hot_keys = hot_keys
        r = self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("cachestorm_requests", "HTTP requests", ["route", "status"], registry=r)
        self.cache_results = Counter("cachestorm_cache_results", "Where reads were answered from",
                                     ["result", "key_class"], registry=r)
        # a query counts when it ran (it had a connection; PostgreSQL answered or failed it); an attempt
        # when a request fell through to the DB path, also those refused at the pool (the herd)
        self.db_queries = Counter("cachestorm_db_queries", "PostgreSQL queries that ran", ["kind", "key_class"],
                                  registry=r)
        self.db_attempts = Counter("cachestorm_db_attempts", "DB queries asked for, refused at the pool too",
                                   ["kind", "key_class"], registry=r)
        self.recomputes = Counter("cachestorm_recomputes", "DB loads for the cache", ["key_class"], registry=r)
        self.key_recomputes = Counter("cachestorm_key_recomputes", "DB loads per hot key", ["key"], registry=r)
        self.coalesced_waiters = Counter("cachestorm_coalesced_waiters", "Reads that joined another's load",
                                         registry=r)
        self.lock_waits = Counter("cachestorm_lock_waits", "Reads that waited on a recompute lock", registry=r)
        self.lease_waits = Counter("cachestorm_lease_waits", "Reads that waited on another's lease", registry=r)
        self.lease_refused = Counter("cachestorm_lease_refused", "Fills refused: lease no longer current",
                                     registry=r)
        self.pool_waits = Counter("cachestorm_pool_waits", "DB pool acquires that had to wait", registry=r)
        self.pool_timeouts = Counter("cachestorm_pool_timeouts", "DB pool acquires that timed out", registry=r)
        self.cache_errors = Counter("cachestorm_cache_errors", "Failed Redis operations", ["op"], registry=r)
        self.wb_backlog = Gauge("cachestorm_write_behind_backlog", "Keys with unflushed writes", registry=r)
        self.wb_flush_lag = Gauge("cachestorm_write_behind_flush_lag_seconds",
                                  "Age of the oldest unflushed write at the last flush", registry=r)
        self.permission_violations = Counter("cachestorm_permission_violations",
                                             "Grants served after revoke + bound", registry=r)
        self.request_seconds = Histogram("cachestorm_request_seconds", "Request duration", registry=r,
                                         buckets=(.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        # the DB's own latency (a read's query, connection wait excluded); its buckets are scraped
        self.db_query_seconds = Histogram("cachestorm_db_query_seconds", "DB read query duration", registry=r,
                                          buckets=DB_QUERY_BUCKETS)
        self._results: dict[tuple[str, str], object] = {}
        self._requests: dict[tuple[str, int], object] = {}

    def key_class(self, key_id: int) -> str:
        return "hot" if key_id <= self.hot_keys else "rest"

    def result(self, result: str, key_class: str) -> None:
        child = self._results.get((result, key_class))
        if child is None:
            child = self._results[(result, key_class)] = self.cache_results.labels(result, key_class)
        child.inc()

    def request(self, route: str, status: int, seconds: float) -> None:
        child = self._requests.get((route, status))
        if child is None:
            child = self._requests[(route, status)] = self.requests.labels(route, str(status))
        child.inc()
        self.request_seconds.observe(seconds)

    def recompute(self, key_id: int) -> None:
        klass = self.key_class(key_id)
        self.recomputes.labels(klass).inc()
        if klass == "hot":
            self.key_recomputes.labels(str(key_id)).inc()

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 if never set); for tests and /healthz."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0
