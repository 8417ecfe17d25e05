"""PostgreSQL: schema and seed (sync, before serving), and the async pool every request uses.

The read query does its recompute inside PostgreSQL (`cachestorm_recompute`): it holds one of
--db-capacity slots (transaction advisory locks) for its cost, so concurrent recomputes queue
inside the database like queries on a server with that many cores, and each keeps its pooled
connection while it waits: the pool drains for the real reason. The cost is pg_sleep (`sleep`,
the default: a deterministic N-core database) or a calibrated CPU burn (`cpu`: real work that
also slows everything else on the machine).
"""

from __future__ import annotations

import sys
import time
from contextlib import asynccontextmanager

import psycopg
from cachestorm.targets.errors import DB_UNAVAILABLE, POOL_TIMEOUT, TargetError
from cachestorm.targets.metrics import Metrics
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cachestorm.core.errors import CachestormError
from cachestorm.core.urls import redact

SCHEMA_LOCK = 7_246_001  # pg advisory lock id: several instances may start at once
SLOT_LOCK_CLASS = 7_246_002  # first key of the (int, int) advisory locks that are the DB's slots
RECOMPUTE_MODES = ("sleep", "cpu")
CALIBRATION_LOOPS = 200_000
AUX_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS cachestorm_flushes (
    flush_id text PRIMARY KEY, domain text NOT NULL, items int NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS cachestorm_requests (
    request_id text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
-- a busy loop of `loops` iterations: the cpu mode's unit of real work
CREATE OR REPLACE FUNCTION cachestorm_burn(loops bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE acc bigint := 0;
BEGIN
  FOR i IN 1..loops LOOP acc := (acc + i * 7) % 1000003; END LOOP;
  RETURN acc;
END $$;
-- one recompute: take a free slot (else queue on a random one), then pay the cost while holding it;
-- the xact lock is released when the statement's transaction ends
CREATE OR REPLACE FUNCTION cachestorm_recompute(slots int, cost_s float8, loops bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE first int; got boolean := false;
BEGIN
  IF cost_s <= 0 AND loops <= 0 THEN RETURN; END IF;
  IF slots > 0 THEN
    first := floor(random() * slots)::int;
    FOR i IN 0..slots - 1 LOOP
      IF pg_try_advisory_xact_lock({SLOT_LOCK_CLASS}, (first + i) % slots) THEN got := true; EXIT; END IF;
    END LOOP;
    IF NOT got THEN PERFORM pg_advisory_xact_lock({SLOT_LOCK_CLASS}, first); END IF;
  END IF;
  IF loops > 0 THEN PERFORM cachestorm_burn(loops); ELSE PERFORM pg_sleep(cost_s); END IF;
END $$;
"""
WAIT_THRESHOLD_S = 0.001  # an acquire slower than this waited for a free connection
DB_DOWN_MEMORY_S = 5.0    # a pool timeout this soon after a connection error means the DB is down


def prepare_database(url: str, table: str, seed_data_sql: str, rows: int, reset: bool = False) -> None:
    """Create the domain's table and seed ids 1..rows; idempotent and safe with concurrent starts.
    reset (tests): drop the table first, so every row is back at version 1."""
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=False) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            if reset:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(AUX_SCHEMA)
            started = time.perf_counter()
            new = conn.execute("SELECT to_regclass(%s) IS NULL", (table,)).fetchone()[0]
            columns = "id bigint NOT NULL, version bigint NOT NULL, data jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now()"
            seed = (f"INSERT INTO {table} (id, version, data) SELECT g, 1, {seed_data_sql} "
                    f"FROM generate_series(%s::bigint, %s::bigint) AS g")
            if new:  # all rows first, the primary key after: one sorted index build, not a million inserts into it
                conn.execute(f"CREATE TABLE {table} ({columns})")
                conn.execute(seed, (1, rows))
                conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (id)")
                added = rows
            else:  # seeded before: count what of 1..rows is there (one index scan) and add only what is missing
                present, top = conn.execute(f"SELECT count(*), coalesce(max(id), 0) FROM {table} "
                                            f"WHERE id BETWEEN 1 AND %s", (rows,)).fetchone()
                first = top + 1 if present == top else 1  # no gap below the top: only ids above it are missing
                added = 0 if present >= rows else conn.execute(f"{seed} ON CONFLICT (id) DO NOTHING",
                                                               (first, rows)).rowcount
            conn.commit()
            if added:
                print(f"cachestorm target: seeded {added} rows of {table} in {time.perf_counter() - started:.2f} s",
                      file=sys.stderr, flush=True)
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise CachestormError(f"PostgreSQL at {redact(url)} is unreachable ({redact(first)[:160]}); "
                              "check --postgres-url or start the stack (cachestorm up)") from exc


class Database:
    def __init__(self, url: str, metrics: Metrics, pool_size: int, pool_timeout: float, recompute_ms: float,
                 capacity: int = 0, recompute_mode: str = "sleep"):
        self.metrics = metrics
        self.recompute_s = recompute_ms / 1000.0
        self.capacity = capacity      # 0: no slots, every recompute runs at once
        self.recompute_mode = recompute_mode
        self.recompute_loops = 0      # cpu mode: burn iterations per recompute, calibrated at open()
        self.pool_timeout = pool_timeout
        self.last_connection_error = 0.0
        self.pool = AsyncConnectionPool(
            url, min_size=pool_size, max_size=pool_size, timeout=pool_timeout, open=False,
            kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 3},
            reconnect_failed=self._reconnect_failed, reconnect_timeout=3600,
        )

    def _reconnect_failed(self, pool) -> None:
        self.last_connection_error = time.monotonic()

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=10)
        if self.recompute_mode == "cpu" and self.recompute_s > 0:
            self.recompute_loops = await self._calibrate()

    async def _calibrate(self) -> int:
        """Burn iterations that take `recompute_s` on an idle core (fastest of three samples)."""
        fastest = float("inf")
        async with self.pool.connection() as conn:
            for _ in range(3):
                started = time.perf_counter()
                await conn.execute("SELECT cachestorm_burn(%s)", (CALIBRATION_LOOPS,))
                fastest = min(fastest, time.perf_counter() - started)
        return max(1, int(CALIBRATION_LOOPS * self.recompute_s / max(fastest, 1e-6)))

    async def close(self) -> None:
        await self.pool.close(timeout=2)

    @asynccontextmanager
    async def connection(self, counted: tuple[str, str, int] | None = None):
        """A pooled connection; pool exhaustion -> 503 pool_timeout, DB errors -> 503 db_unavailable.
        counted (kind, key_class, n): n attempts of that kind now, and n queries once a connection is
        held (what runs is counted, not what was refused at the pool)."""
        started = time.monotonic()
        if counted is not None:
            self.metrics.db_attempts.labels(counted[0], counted[1]).inc(counted[2])
        try:
            async with self.pool.connection() as conn:
                if time.monotonic() - started > WAIT_THRESHOLD_S:
                    self.metrics.pool_waits.inc()
                if counted is not None:
                    self.metrics.db_queries.labels(counted[0], counted[1]).inc(counted[2])
                yield conn
        except PoolTimeout as exc:
            self.metrics.pool_waits.inc()
            if time.monotonic() - self.last_connection_error < DB_DOWN_MEMORY_S:
                raise TargetError(DB_UNAVAILABLE, "no connection to PostgreSQL") from exc
            self.metrics.pool_timeouts.inc()
            raise TargetError(POOL_TIMEOUT, f"no free connection within {self.pool_timeout}s") from exc
        except psycopg.OperationalError as exc:
            self.last_connection_error = time.monotonic()
            raise TargetError(DB_UNAVAILABLE, str(exc).strip().splitlines()[0][:200] if str(exc) else "") from exc

    async def read(self, table: str, key_id: int, recompute: bool = True) -> dict | None:
        """The expensive read: the recompute (a slot, then its cost) then the row (also for ids that
        do not exist). Its latency, connection wait excluded, is cachestorm_db_query_seconds; it counts in
        cachestorm_db_attempts_total, and in cachestorm_db_queries_total once it has a connection."""
        cost_s, loops = (self.recompute_s, self.recompute_loops) if recompute else (0.0, 0)
        async with self.connection(("read", self.metrics.key_class(key_id), 1)) as conn:
            started = time.perf_counter()
            cur = await conn.execute(
                f"SELECT t.id, t.version, t.data FROM (SELECT cachestorm_recompute(%s, %s, %s)) AS cost "
                f"LEFT JOIN {table} AS t ON t.id = %s", (self.capacity, cost_s, loops, key_id))
            row = await cur.fetchone()
            self.metrics.db_query_seconds.observe(time.perf_counter() - started)
        return row if row and row["id"] is not None else None

    async def read_many(self, warm_sql: str, first_id: int, last_id: int) -> list[dict]:
        """Rows first_id..last_id in one query (the domain's warm_sql), without the recompute cost:
        one range of the warm-up's bulk prefill (targets/prefill.py keeps the ranges bounded)."""
        async with self.connection(("prefill", "rest", 1)) as conn:
            cur = await conn.execute(warm_sql, (first_id, last_id))
            return await cur.fetchall()

    async def write(self, table: str, set_sql: str, params: tuple, key_id: int,
                    request_id: str | None = None) -> dict | None:
        """One write transaction (`UPDATE table SET <set_sql>, version+1`) returning the committed row,
        None if the id does not exist. A repeated X-Request-Id is applied once: the id is recorded
        in the same transaction, and a repeat answers with the current row."""
        async with self.connection(("write", self.metrics.key_class(key_id), 1)) as conn, conn.transaction():
            if request_id:
                cur = await conn.execute("INSERT INTO cachestorm_requests (request_id) VALUES (%s) "
                                         "ON CONFLICT DO NOTHING RETURNING 1", (request_id,))
                if await cur.fetchone() is None:
                    cur = await conn.execute(f"SELECT id, version, data FROM {table} WHERE id = %s", (key_id,))
                    return await cur.fetchone()
            cur = await conn.execute(
                f"UPDATE {table} SET {set_sql}, version = version + 1, updated_at = now() "
                f"WHERE id = %s RETURNING id, version, data", (*params, key_id))
            return await cur.fetchone()

    async def delete(self, table: str, key_id: int, request_id: str | None = None) -> dict | None:
        """Delete the row; returns it with the delete's version (one above its last, as a write would),
        None if it does not exist. A repeated X-Request-Id finds the row gone: None."""
        async with self.connection(("write", self.metrics.key_class(key_id), 1)) as conn, conn.transaction():
            if request_id:
                cur = await conn.execute("INSERT INTO cachestorm_requests (request_id) VALUES (%s) "
                                         "ON CONFLICT DO NOTHING RETURNING 1", (request_id,))
                if await cur.fetchone() is None:
                    return None
            cur = await conn.execute(f"DELETE FROM {table} WHERE id = %s RETURNING id, version + 1 AS version, data",
                                     (key_id,))
            return await cur.fetchone()
