"""PostgreSQL: schema and seed (sync, before serving), and the async pool every request uses.

The read query does real work in PostgreSQL: pg_sleep(recompute_ms) stands in for an expensive
recompute, so a cache miss costs what it would cost and concurrent misses really overlap.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cachestorm.errors import CachestormError
from targets.errors import DB_UNAVAILABLE, POOL_TIMEOUT, TargetError
from targets.metrics import Metrics

SCHEMA_LOCK = 7_246_001  # pg advisory lock id: several instances may start at once
AUX_SCHEMA = """
CREATE TABLE IF NOT EXISTS cachestorm_flushes (
    flush_id text PRIMARY KEY, domain text NOT NULL, items int NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS cachestorm_requests (
    request_id text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
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
            conn.execute(f"""CREATE TABLE IF NOT EXISTS {table} (
                id bigint PRIMARY KEY, version bigint NOT NULL, data jsonb NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now())""")
            conn.execute(f"INSERT INTO {table} (id, version, data) SELECT g, 1, {seed_data_sql} "
                         f"FROM generate_series(1, %s) AS g ON CONFLICT (id) DO NOTHING", (rows,))
            conn.commit()
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise CachestormError(f"PostgreSQL at {url} is unreachable ({first[:160]}); "
                              "check --postgres-url or start the stack (cachestorm up)") from exc


class Database:
    def __init__(self, url: str, metrics: Metrics, pool_size: int, pool_timeout: float, recompute_ms: float):
        self.metrics = metrics
        self.recompute_s = recompute_ms / 1000.0
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

    async def close(self) -> None:
        await self.pool.close(timeout=2)

    @asynccontextmanager
    async def connection(self):
        """A pooled connection; pool exhaustion -> 503 pool_timeout, DB errors -> 503 db_unavailable."""
        started = time.monotonic()
        try:
            async with self.pool.connection() as conn:
                if time.monotonic() - started > WAIT_THRESHOLD_S:
                    self.metrics.pool_waits.inc()
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
        """The expensive read: pg_sleep(recompute) then the row (also for ids that do not exist)."""
        self.metrics.db_queries.labels("read", self.metrics.key_class(key_id)).inc()
        async with self.connection() as conn:
            cur = await conn.execute(
                f"SELECT t.id, t.version, t.data FROM (SELECT pg_sleep(%s)) AS cost "
                f"LEFT JOIN {table} AS t ON t.id = %s", (self.recompute_s if recompute else 0.0, key_id))
            row = await cur.fetchone()
        return row if row and row["id"] is not None else None

    async def write(self, table: str, set_sql: str, params: tuple, key_id: int,
                    request_id: str | None = None) -> dict | None:
        """One write transaction (`UPDATE table SET <set_sql>, version+1`) returning the committed row,
        None if the id does not exist. A repeated X-Request-Id is applied once: the id is recorded
        in the same transaction, and a repeat answers with the current row."""
        self.metrics.db_queries.labels("write", self.metrics.key_class(key_id)).inc()
        async with self.connection() as conn, conn.transaction():
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
        self.metrics.db_queries.labels("write", self.metrics.key_class(key_id)).inc()
        async with self.connection() as conn, conn.transaction():
            if request_id:
                cur = await conn.execute("INSERT INTO cachestorm_requests (request_id) VALUES (%s) "
                                         "ON CONFLICT DO NOTHING RETURNING 1", (request_id,))
                if await cur.fetchone() is None:
                    return None
            cur = await conn.execute(f"DELETE FROM {table} WHERE id = %s RETURNING id, version + 1 AS version, data",
                                     (key_id,))
            return await cur.fetchone()
