"""The incident's numbers from run-folder data: DB latency from scraped buckets, recovery from the
clients' view (metastability), the second expiry wave."""

from __future__ import annotations

from cachestorm.reports.incident import bucket_quantile, client_recovery, expiry_waves
from cachestorm.reports.metrics import CounterSeries
from cachestorm.reports.phases import FaultWindow

NAME = "cachestorm_db_query_seconds_bucket"


def scrapes(per_second: list[dict[float, int]]) -> CounterSeries:
    """Cumulative bucket counters, one scrape a second; `per_second[i]` = {upper bound: queries in it}."""
    bounds = sorted({le for second in per_second for le in second} | {float("inf")})
    totals = dict.fromkeys(bounds, 0)
    records = [{"t": 0.0, "instance": "a", "metrics": {}}]
    for n, second in enumerate(per_second, start=1):
        for le in bounds:
            totals[le] += sum(count for upper, count in second.items() if upper <= le)
        records.append({"t": float(n), "instance": "a",
                        "metrics": {f'{NAME}{{le="{"+Inf" if le == float("inf") else le}"}}': float(v)
                                    for le, v in totals.items()}})
    return CounterSeries.from_metrics(records)


def test_p99_from_bucket_increases_over_a_window():
    series = scrapes([{0.1: 99, 0.2: 1}, {0.1: 10, 2.0: 90}])
    assert 90 < bucket_quantile(series, 0, 1) <= 200   # first second: a few slow ones at most
    assert 1800 <= bucket_quantile(series, 1, 2) <= 2000  # second second: mostly 1-2 s
    assert bucket_quantile(series, 5, 9) is None        # no queries there


def healthy(t: int, n: int = 100) -> dict:
    return {"t": t, "requests_started": n, "attempts_started": n}


def storm(t: int) -> dict:
    return {"t": t, "requests_started": 100, "attempts_started": 380, "timeouts": 150, "server_errors": 100}


def test_recovery_is_when_clients_see_a_healthy_system_for_seconds_in_a_row():
    seconds = [healthy(t) for t in range(10)] + [storm(t) for t in range(10, 16)] + [healthy(t) for t in range(16, 30)]
    assert client_recovery(seconds, 12.0, 30.0, 1.0) == 4.0
    assert client_recovery([storm(t) for t in range(10, 30)], 12.0, 30.0, 1.0) is None  # metastable: stays down


def test_a_stalled_client_is_not_a_recovery():
    """Seconds in which nothing was sent (the load generator itself stalled) prove nothing."""
    stalled = [{"t": t, "requests_started": 0, "attempts_started": 0} for t in range(12, 20)]
    assert client_recovery([storm(t) for t in range(10, 12)] + stalled, 12.0, 20.0, 1.0) is None


def test_retries_still_amplified_are_not_a_recovery():
    retrying = [{"t": t, "requests_started": 100, "attempts_started": 150} for t in range(12, 20)]
    assert client_recovery(retrying, 12.0, 20.0, 1.0) is None


def test_the_second_expiry_wave_is_measured_apart_from_the_first():
    reads = "cachestorm_db_queries_total"
    counts = [0, 5, 10, 15, 20, 220, 240, 245, 250, 255, 260, 265, 365, 370, 375]
    records = [{"t": float(t), "instance": "a", "metrics": {f'{reads}{{kind="read",key_class="rest"}}': float(v)}}
               for t, v in enumerate(counts)]
    window = FaultWindow("synchronized-expiry", 2.0, 2.0, {"applied": {"wave_in_s": 2.0}})
    [wave] = expiry_waves(CounterSeries.from_metrics(records), [window], 15.0)
    assert wave["first_wave_peak_reads_per_s"] == 200 and wave["second_wave_peak_reads_per_s"] == 100


def test_a_repeated_expiry_counts_every_key_of_every_expiry():
    """db_loads_per_expiry divides by the keys expired: a repeated expiry's are its revert's total,
    not the first expiry's (else a lock's one load per key and expiry would read as 4)."""
    details = {"keys": 10, "applied": {"keys": 10}, "reverted": {"expiries": 4, "keys": 40}}
    assert FaultWindow("fault hot-key-expiry-repeated", 10.0, 16.0, details).expired_keys == 40
    assert FaultWindow("fault hot-key-expiry", 10.0, 10.1, {"keys": 10, "reverted": {}}).expired_keys == 10


def test_the_db_p99_before_the_fault_takes_none_of_its_seconds():
    """Scrapes at whole seconds, the fault at 5.5 s: the interval [5, 6) holds its first slow queries
    and belongs to the fault, not to "before" (it had lifted the DB's p99 before from 284 to 829 ms)."""
    from cachestorm.reports.incident import db_latency
    from cachestorm.reports.phases import Phase

    series = scrapes([{0.1: 20}] * 5 + [{0.1: 5, 2.0: 30}, {2.0: 40}])
    phases = [Phase("before", "before", 0.0, 5.5), Phase("during x", "during", 5.5, 7.0, "x")]
    latency = db_latency(series, CounterSeries({}), phases)
    assert latency["p99_ms_before_fault"] <= 100
    assert latency["p99_ms_during_fault"] >= 1000
