"""The one table of defaults: `run`, `matrix`, `capacity`, `demo`, the targets and the traffic read
them here (a default written twice drifts: it did, to alpha 1.0 vs 0.99, keys 1,000 vs 10,000).

Where a command or a part deliberately differs, the difference is its own named entry with its
reason. docs/design.md, "The incident's defaults", says what the incident's entries model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Defaults:
    # ---- a run's workload (`cachestorm run`; the other commands start from it)
    strategy: str = "default"          # the domain's recommended strategy (counters -> write-behind)
    domain: str = "profiles"           # the simplest domain: read-mostly user profiles
    duration_s: float = 30.0           # long enough for a steady state before and after a fault
    users: int = 50                    # closed model: enough concurrency to queue on a 2-core laptop
    spawn_rate: float = 50.0           # every user within the first second: the load is flat from the start
    out: str = "runs"                  # run folders go under ./runs
    instances: int = 1                 # one target process; more share the cache (and its herds)
    rows: int = 10_000                 # rows in PostgreSQL: ids beyond --keys exist but are rarely read
    keys: int = 1_000                  # key space the traffic draws from (the prefill warms all of it)
    key_model: str = "zipf"            # real caches see skewed popularity
    alpha: float = 1.0                 # Zipf exponent: the top-10 of 1,000 keys take ~39% of the reads
    celebrity_share: float = 0.0       # no extra share for key 1 unless asked
    hot_keys: int = 10                 # keys 1..10 count as hot: histories, hot-key faults
    write_ratio: float = 0.05          # read-mostly, as caches are deployed
    retry: str = "none"                # clients that do not retry: retries are an experiment's amplifier
    recompute_ms: float = 50.0         # one miss's query: a cheap join; what a cache saves
    recompute_mode: str = "sleep"      # pg_sleep in a slot: deterministic (cpu burns real cores)
    db_capacity: int = 4               # recomputes PostgreSQL runs at once: a 4-core database
    pool_size: int = 10                # DB connections per target process
    pool_timeout_s: float = 1.0        # wait for a connection before 503 pool_timeout
    request_timeout_s: float = 2.0     # a typical SDK/API-gateway deadline, longer than a healthy p99
    missing_share: float = 0.0         # no reads of absent ids unless asked (negative caching's case)
    owner_read_share: float = 0.0      # no read-your-writes reads unless asked
    seed: int = 42                     # a run is repeatable: same seed, same key sequence
    warm: bool = True                  # prefill every key: steady state is a warm cache, not a cold start

    # ---- the protections' knobs (the targets' own; a run passes them only when typed)
    jitter: float = 0.1                # ±10% of the TTL: spreads expiries written together
    xfetch_beta: float = 1.0           # XFetch's β = 1: the paper's recommended default
    lock_ms: float = 3000.0            # a lock or lease outlives a slow recompute, not a crashed holder
    max_stale_s: float = 30.0          # stale-while-revalidate serves a value up to 30 s past expiry
    negative_ttl_s: float = 5.0        # an absent id is re-checked every 5 s
    stale_if_error_s: float = 300.0    # past expiry, a value still serves as the fallback of a failure
    redis_timeout_ms: float = 250.0    # a Redis call that takes longer counts as Redis failing
    breaker_failures: int = 5          # consecutive Redis failures that open the breaker
    breaker_cooldown_s: float = 1.0    # how long the open breaker skips Redis before probing it
    flush_interval_s: float = 1.0      # write-behind flushes every second (0: only POST /counters/flush)

    # ---- the traffic's own (Locust options no command sets)
    hot_fraction: float = 0.2          # hotspot: 20% of the keys ...
    hot_op_fraction: float = 0.8       # ... take 80% of the operations
    delete_ratio: float = 0.0          # no deletes unless asked
    value_size: str = "230"            # bytes per value: a small JSON document
    arrivals: str = "constant"         # open model: evenly spaced arrivals (poisson is burstier)
    max_inflight: int = 1000           # open model: bound per process; beyond it arrivals are dropped, counted
    late_ms: float = 2.0               # a send later than this after its intended time counts as late
    history_sample: float = 0.01       # 1% of the key ids (plus the hot keys) keep full histories
    think_time: str = "0"              # closed model: no wait between operations

    # ---- deliberate differences
    target_db_capacity: int = 0        # `python -m cachestorm.targets` alone models no DB cores (plain pg_sleep)
    target_port: int = 8000            # a target started by hand; a run picks free ports
    locust_seed: int = -1              # plain Locust draws a new seed each time; a run fixes one
    locust_request_timeout_s: float = 10.0  # plain Locust: a loaded laptop's slow answer is latency, not an error
    matrix_users: int = 40             # a matrix runs every combination: a little less load per run
    matrix_recompute_ms: float = 100.0  # ... on a costlier recompute, so a stampede shows in the comparison
    matrix_celebrity_share: float = 0.2  # ... and a celebrity key, which the hot-key faults hit
    matrix_experiments: str = "hot-key-expiry"  # the incident every strategy is compared under
    capacity_ttl_s: float = 300.0      # no natural expiry wave inside a capacity run's steps
    capacity_max_rate: float = 800.0   # arrivals/s of the last step: past a 2-core laptop's knee
    capacity_steps: int = 5            # steps from max-rate/steps up to max-rate
    capacity_hold_s: float = 10.0      # each step: a second to settle, nine to measure
    capacity_slo_p99_ms: float = 100.0  # a step passes with p99 from the intended send time within this
    capacity_max_error_rate: float = 0.01  # ... and at most 1% errors
    demo_duration_s: float = 22.0      # the demo's load per strategy: the 6 s of expiries and their recovery fit
    demo_experiment_at_s: float = 8.0  # the expiry 8 s in: Locust's start-up, then a steady "before"


DEFAULTS = Defaults()


@dataclass(frozen=True)
class Limits:
    """The largest values a command accepts, each with its reason; refused before anything starts
    (docs/design.md, "Limits"). A value past them used to run for hours or fail half-way."""

    max_duration_s: float = 24 * 3600.0  # one run's load (and a fault's window): a day; longer is a soak of several runs
    max_users: int = 10_000            # closed model: one Locust process (a run starts one) drives ~thousands of users
    max_spawn_rate: float = 10_000.0   # users started per second (Locust warns above 100 per process)
    max_rate: float = 20_000.0         # open model: arrivals/s one Locust process schedules on time (measured, design.md)
    max_recompute_ms: float = 60_000.0  # one recompute holds a DB slot: a minute is an outage, not a cache miss
    max_ttl_s: float = 30 * 24 * 3600.0  # a cache TTL of at most 30 days
    max_pool_timeout_s: float = 600.0  # a wait for a DB connection of at most 10 minutes
    max_db_connections: int = 250      # --pool-size × --instances: our PostgreSQL has max_connections=300
    #                                    (stack/servers.py); the rest is the scraper's, the faults' and psql's
    max_rows: int = 10_000_000         # rows seeded (and keys prefilled) before the load: minutes at 10M
    max_db_capacity: int = 1024        # --db-capacity models database cores
    max_label_chars: int = 100         # a run folder's name is <stamp>-<label>: well inside a file name's 255 bytes


LIMITS = Limits()
