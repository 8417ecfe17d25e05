"""The warm-up's bulk prefill, streamed: rows 1..N in id ranges of CHUNK, never all at once.

PostgreSQL builds each range's cache values and the RESP `SET key value PX ms` commands itself
(`commands_sql`: one bytea per range), byte for byte what `Entry.encode` and redis-py would send,
expiries spread over the TTL as `CachedStrategy.prefill_entry` spreads them; this process only
passes each range's bytes to Redis on one raw connection and counts the `+OK`s, while PostgreSQL
builds the next range. Nothing per key stays in Python memory, and the per-key work is in C.

A row PostgreSQL cannot write exactly as Python's json.dumps would (non-ASCII, decimals, a string
that holds ": " or ", ") comes back by id and is filled the ordinary way (Entry, pipelined SETs);
so does every row when the strategy's TTL cannot be planned in SQL (a plugin protection with its
own fill_ttl, a strategy of its own entry_for), still range by range.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from cachestorm.targets.errors import CacheUnavailable

if TYPE_CHECKING:
    from cachestorm.targets.service import Service

CHUNK = 20_000  # ids per range: ~4.4 MB of commands for the profiles domain
BUILDERS = 2  # PostgreSQL connections building ranges at once (one core each)

# data::text written compactly as json.dumps(separators=(",", ":")) would, or NULL when that cannot
# be proven: printable ASCII only (then both escape alike), no decimal or exponent (Python would
# re-print a float), and the compacted text must parse back to the same value (a string holding
# ": " or ", " would not).
_BODY = """CASE WHEN t ~ '^[ -~]*$' AND t !~ '[0-9][.eE]' AND c::jsonb = data THEN c END"""


def commands_sql(table: str, expires: bool) -> str:
    """One range's SET commands (bytea), how many rows it had and built, and the ids left to Python.
    Parameters: prefix, delta (text: Python's repr), first, last; expiring: now, ttl_low, ttl_high,
    keep_extra_s. Each row's TTL is drawn in [ttl_low, ttl_high], its age uniformly in that TTL
    (CachedStrategy.prefill_entry). OFFSET 0 keeps each subquery a subquery: flattened, every
    reference to a column would compute it again (6x slower). format() builds a command in one
    call (a chain of || was 3x slower)."""
    if expires:
        draw = "(%(ttl_low)s::float8 + (%(ttl_high)s::float8 - %(ttl_low)s::float8) * random()) AS ttl"
        age = ", ttl * random() AS elapsed"
        timing = ("(%(now)s::float8 + ttl - elapsed)::text AS x, greatest(1, floor((ttl + %(keep_extra_s)s::float8)"
                  " * 1000)::bigint - floor(elapsed * 1000)::bigint)::text AS px")
        command = ("format(E'*5\\r\\n$3\\r\\nSET\\r\\n$%%s\\r\\n%%s\\r\\n$%%s\\r\\n%%s\\r\\n$2\\r\\nPX"
                   "\\r\\n$%%s\\r\\n%%s\\r\\n', octet_length(k), k, octet_length(v), v, length(px), px)")
    else:
        draw, age, timing = "0 AS ttl", "", "'0.0' AS x, '' AS px"
        command = ("format(E'*3\\r\\n$3\\r\\nSET\\r\\n$%%s\\r\\n%%s\\r\\n$%%s\\r\\n%%s\\r\\n', "
                   "octet_length(k), k, octet_length(v), v)")
    return f"""
SELECT convert_to(coalesce(string_agg(CASE WHEN v IS NOT NULL THEN {command} END, ''), ''), 'UTF8') AS commands,
       count(*) AS rows,
       count(v) AS built, coalesce(array_agg(id) FILTER (WHERE v IS NULL), '{{}}') AS others
FROM (SELECT id, px, %(prefix)s || id AS k,
             format('{{"x":%%s,"d":%%s,"r":{{"id":%%s,"version":%%s,"data":%%s}}}}', x, %(delta)s::text, id, version,
                    body) AS v0, body
      FROM (SELECT id, version, {_BODY} AS body, {timing}
            FROM (SELECT *, data::text AS t, replace(replace(data::text, ': ', ':'), ', ', ',') AS c{age}
                  FROM (SELECT id, version, data, {draw} FROM {table}
                        WHERE id BETWEEN %(first)s AND %(last)s OFFSET 0) AS r0 OFFSET 0) AS r1 OFFSET 0) AS r2
            OFFSET 0) AS r3
     CROSS JOIN LATERAL (SELECT CASE WHEN body IS NOT NULL THEN v0 END AS v) AS r4
"""


def sql_plan(service: Service) -> dict | None:
    """The strategy's prefill as parameters of commands_sql, or None when SQL cannot reproduce it."""
    from cachestorm.targets.strategies.base import CachedStrategy

    strategy = service.strategy
    if not isinstance(strategy, CachedStrategy):
        return None
    kind = type(strategy)
    if kind.entry_for is not CachedStrategy.entry_for or kind.prefill_entry is not CachedStrategy.prefill_entry:
        return None
    spec = service.domain.spec
    if service.domain.key(1).redis != spec.key(1):
        return None
    plan = {"prefix": spec.key(""), "delta": repr(float(service.settings.recompute_ms / 1000.0)),
            "expires": bool(strategy.expires)}
    if strategy.expires:
        low = high = float(strategy.ttl)
        for protection in strategy.protections:
            span = protection.fill_ttl_range(low, high)
            if span is None:
                return None
            low, high = span
        if low <= 0 or high <= 0:
            return None  # no TTL: the Python path says what that means
        plan.update(ttl_low=low, ttl_high=high, keep_extra_s=float(strategy.keep_extra_s))
    return plan


class RawPipe:
    """One Redis connection (redis-py made it: URL, TLS, AUTH, SELECT) written raw: RESP bytes
    in, one-line replies counted by a reader task."""

    def __init__(self, client: aioredis.Redis):
        self.conn = client.connection_pool.make_connection()
        self.sent = 0
        self.ok = 0
        self.replies = 0
        self._reader: asyncio.Task | None = None
        self._progress = asyncio.Event()

    async def open(self) -> None:
        await self.conn.connect()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        reader = self.conn._reader
        tail = b""
        while True:
            data = await reader.read(1 << 20)
            if not data:
                raise ConnectionError("Redis closed the connection during the prefill")
            data = tail + data
            cut = data.rfind(b"\r\n") + 2
            whole, tail = data[:cut], data[cut:]
            self.replies += whole.count(b"\r\n")
            self.ok += whole.count(b"+OK\r\n")
            self._progress.set()

    async def send(self, commands: bytes, count: int) -> None:
        writer = self.conn._writer
        writer.write(commands)
        self.sent += count
        await writer.drain()

    async def wait(self, behind: int = 0) -> None:
        """Until at most `behind` replies are outstanding (bounds what Redis holds for us)."""
        while self.sent - self.replies > behind:
            if self._reader.done():
                self._reader.result()
            self._progress.clear()
            waiter = asyncio.ensure_future(self._progress.wait())
            await asyncio.wait([waiter, self._reader], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.conn.disconnect()


async def prefill(service: Service, keys: int, seed: int | None, timeout_s: float | None = None) -> dict:
    """Fill rows 1..keys (at most --rows); returns entries set, rows read, and how (sql or python).
    Given up after 60 s + 100 µs per key (Redis or PostgreSQL stuck), as the conductor's wait is sized."""
    last = min(keys, service.settings.rows)
    timeout_s = 60.0 + 100e-6 * last if timeout_s is None else timeout_s
    plan = sql_plan(service)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            if plan is None:
                filled, rows = await _python_ranges(service, 1, last, random.Random(seed))
                return {"filled": filled, "rows": rows, "built_by": "python",
                        "seconds": round(time.perf_counter() - started, 3)}
            filled, rows, by_python = await _sql_ranges(service, plan, last, seed)
    except (aioredis.RedisError, OSError, TimeoutError) as exc:
        service.metrics.cache_errors.labels("prefill").inc()
        raise CacheUnavailable(f"prefill: {exc.__class__.__name__}") from exc
    return {"filled": filled, "rows": rows, "built_by": "postgresql", "rows_built_by_python": by_python,
            "seconds": round(time.perf_counter() - started, 3)}


async def _python_ranges(service: Service, first: int, last: int, rng: random.Random) -> tuple[int, int]:
    entry_for = service.strategy.prefill_entry
    filled = rows = 0
    for start in range(first, last + 1, CHUNK):
        chunk = await service.db.read_many(service.domain.spec.warm_sql, start, min(last, start + CHUNK - 1))
        rows += len(chunk)
        filled += await service.cache.fill_many([(service.domain.key(row["id"]).redis, *entry_for(row, rng))
                                                 for row in chunk])
    return filled, rows


async def _sql_ranges(service: Service, plan: dict, last: int, seed: int | None) -> tuple[int, int, int]:
    """BUILDERS connections build ranges in turn while the previous ones go to Redis."""
    sql = commands_sql(service.domain.table, plan["expires"])
    warm_sql = service.domain.spec.warm_sql
    rng = random.Random(seed)
    builders = max(1, min(BUILDERS, service.settings.pool_size))
    pipe = RawPipe(service.cache.client)
    rows = by_python = filled_by_python = 0

    async def build(conn, start: int) -> tuple[dict, list[dict]]:
        params = {**plan, "now": time.time(), "first": start, "last": min(last, start + CHUNK - 1)}
        # one per range query, as read_many counts (the connection is held: an attempt that ran)
        service.metrics.db_attempts.labels("prefill", "rest").inc()
        service.metrics.db_queries.labels("prefill", "rest").inc()
        got = await (await conn.execute(sql, params, binary=True)).fetchone()  # the pool makes dict rows
        others = []
        if got["others"]:  # rare: rows SQL cannot write exactly, read back to be written by Python
            wanted = set(got["others"])
            service.metrics.db_attempts.labels("prefill", "rest").inc()
            service.metrics.db_queries.labels("prefill", "rest").inc()
            cur = await conn.execute(warm_sql, (min(wanted), max(wanted)), binary=False)
            others = [row for row in await cur.fetchall() if row["id"] in wanted]
        return got, others

    async with contextlib.AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(service.db.pool.connection()) for _ in range(builders)]
        if seed is not None:
            for index, conn in enumerate(conns):
                await conn.execute("SELECT setseed(%s)", (random.Random(seed * 31 + index).uniform(-1, 1),))
        await pipe.open()
        stack.push_async_callback(pipe.close)
        pending: deque[asyncio.Task] = deque()
        try:
            for index, start in enumerate(range(1, last + 1, CHUNK)):
                pending.append(asyncio.create_task(build(conns[index % builders], start)))
                while len(pending) >= builders or (pending and start + CHUNK > last):
                    got, others = await pending.popleft()
                    rows += got["rows"]
                    await pipe.wait(behind=2 * CHUNK)  # Redis works on the last ranges while PostgreSQL builds
                    await pipe.send(bytes(got["commands"]), got["built"])
                    if others:
                        by_python += len(others)
                        filled_by_python += await service.cache.fill_many(
                            [(service.domain.key(row["id"]).redis, *service.strategy.prefill_entry(row, rng))
                             for row in others])
            await pipe.wait()
        finally:
            for task in pending:
                task.cancel()
    return pipe.ok + filled_by_python, rows, by_python
