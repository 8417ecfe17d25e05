"""write-behind: a write is applied in Redis and acknowledged; PostgreSQL gets it later in batches.

Redis keys per domain: the value `<domain>:<id>` (no TTL while it has unflushed writes), the hash
`wb:<domain>:pending` (id -> {"rec": latest row, "by": summed increments, "n": writes}), and
`wb:<domain>:flushing`, the batch being flushed, with its flush id. A flush moves pending to
flushing (or resumes an unfinished one, same id), applies it in ONE PostgreSQL transaction that
also records the flush id, then deletes flushing. A flush retried after a timeout or a crash finds
its id recorded and applies nothing: never double-applied. Unflushed writes live in Redis, so a
killed target loses nothing that Redis keeps (the next flush by any instance applies them); if
Redis loses them (crash, eviction, failover) they are gone — GET /counters/pending shows the backlog.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from cachestorm.targets.errors import CACHE_UNAVAILABLE, CacheUnavailable, TargetError
from cachestorm.targets.strategies.base import CachedStrategy, Change, Key
from psycopg.types.json import Jsonb

APPLY = """
if ARGV[6] ~= '' then
  if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', 86400) then
    return {'dup', redis.call('GET', KEYS[1]) or ''}
  end
end
local raw = redis.call('GET', KEYS[1])
if not raw then
  if ARGV[4] == '' then
    if ARGV[6] ~= '' then redis.call('DEL', KEYS[4]) end
    return {'need_base', ''}
  end
  raw = ARGV[4]
end
local entry = cjson.decode(raw)
local rec = entry['r']
if rec == cjson.null or rec == nil then return {'missing', ''} end
local p = cjson.decode(ARGV[3])
if ARGV[2] == 'incr' then
  rec['data']['count'] = (tonumber(rec['data']['count']) or 0) + p['by']
elseif ARGV[2] == 'merge' then
  for k, v in pairs(p) do rec['data'][k] = v end
else
  rec['data'] = p
end
rec['version'] = rec['version'] + 1
entry['r'] = rec
entry['x'] = 0
local encoded = cjson.encode(entry)
redis.call('SET', KEYS[1], encoded)
local old = redis.call('HGET', KEYS[2], ARGV[1])
local item = old and cjson.decode(old) or {by = 0, n = 0}
item['rec'] = rec
item['by'] = item['by'] + (p['by'] or 0)
item['n'] = item['n'] + 1
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(item))
redis.call('SET', KEYS[3], ARGV[5], 'NX')
return {'ok', encoded, redis.call('HLEN', KEYS[2])}
"""
BEGIN = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
  redis.call('HSET', KEYS[1], '__flush_id', ARGV[1], '__since', redis.call('GET', KEYS[3]) or ARGV[2])
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('DEL', KEYS[3])
end
return redis.call('HGETALL', KEYS[2])
"""
FINISH = """
if redis.call('HGET', KEYS[1], '__flush_id') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
for i = 3, #KEYS do
  if redis.call('HEXISTS', KEYS[2], ARGV[i + 1]) == 0 then
    local raw = redis.call('GET', KEYS[i])
    if raw then
      local entry = cjson.decode(raw)
      entry['x'] = tonumber(ARGV[3])
      redis.call('SET', KEYS[i], cjson.encode(entry), 'PX', ARGV[2])
    end
  end
end
return 1
"""
DELTA_SQL = """UPDATE {table} AS t SET
  data = jsonb_set(t.data, '{{count}}', to_jsonb(COALESCE((t.data->>'count')::bigint, 0) + d.by)),
  version = t.version + d.n, updated_at = now()
FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS d(id, by, n) WHERE t.id = d.id"""
ABSOLUTE_SQL = """UPDATE {table} AS t SET data = d.data, version = GREATEST(t.version, d.version), updated_at = now()
FROM unnest(%s::bigint[], %s::jsonb[], %s::bigint[]) AS d(id, data, version) WHERE t.id = d.id"""


class WriteBehind(CachedStrategy):
    name = "write-behind"
    fill_nx = True  # a read's fill must never overwrite a value a write put there meanwhile

    def __init__(self, service, protections):
        super().__init__(service, protections)
        ns = service.domain.name
        self.namespace = ns
        self.pending_key, self.flushing_key, self.since_key = f"wb:{ns}:pending", f"wb:{ns}:flushing", f"wb:{ns}:since"
        client = self.cache.client
        self._apply = client.register_script(APPLY)
        self._begin = client.register_script(BEGIN)
        self._finish = client.register_script(FINISH)
        self._flusher: asyncio.Task | None = None
        self._flush_lock = asyncio.Lock()

    async def start(self) -> None:
        if self.settings.flush_interval > 0:
            self._flusher = asyncio.create_task(self._flush_periodically())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await super().stop()

    # ---------------------------------------------------------------- writes: Redis only

    async def write(self, key: Key, change: Change) -> dict | None:
        if change.mode == "delete":
            # a delete is not deferred: flush what is pending (this key's writes land before it goes),
            # then delete in PostgreSQL and forget the key; a later write finds no row (404)
            await self.flush()
            return await super().write(key, change)
        base = ""
        for _ in range(2):
            status, encoded, *rest = await self._apply_in_redis(key, change, base)
            if status == "need_base":  # not cached: start from the row PostgreSQL has
                record = await change.load_current()
                if record is None:
                    return None
                base = json.dumps({"r": record, "x": 0, "d": 0}, default=str)
                continue
            if status == "missing":
                return None
            if rest:
                self.metrics.wb_backlog.set(int(rest[0]))
            return json.loads(encoded)["r"] if encoded else None
        raise TargetError(CACHE_UNAVAILABLE, "write-behind could not find a base value")

    async def _apply_in_redis(self, key: Key, change: Change, base: str) -> list:
        dedupe = f"wb:req:{change.request_id}" if change.request_id else "wb:req:-"
        try:
            result = await self.cache.call("write", self._apply(
                keys=[key.redis, self.pending_key, self.since_key, dedupe],
                args=[key.id, change.mode, json.dumps(change.payload), base, repr(time.time()),
                      change.request_id or ""]))
        except CacheUnavailable as exc:  # cannot acknowledge a write we cannot keep
            raise TargetError(CACHE_UNAVAILABLE, str(exc)) from exc
        return [part.decode() if isinstance(part, bytes) else part for part in result]

    # ---------------------------------------------------------------- flushing

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - retried next period (same flush id)
                pass

    async def flush(self, fail_after_commit: bool = False) -> dict:
        """Flush one batch. fail_after_commit simulates a timeout after PostgreSQL committed."""
        async with self._flush_lock:
            try:
                raw = await self.cache.call("flush", self._begin(
                    keys=[self.pending_key, self.flushing_key, self.since_key],
                    args=[uuid.uuid4().hex, repr(time.time())]))
            except CacheUnavailable as exc:
                raise TargetError(CACHE_UNAVAILABLE, str(exc)) from exc
            fields = {_s(raw[i]): _s(raw[i + 1]) for i in range(0, len(raw), 2)}
            if not fields:
                self.metrics.wb_flush_lag.set(0)
                return {"flushed": 0, "pending": await self._pending_count(), "flush_id": None, "applied": False}
            flush_id = fields.pop("__flush_id")
            since = float(fields.pop("__since"))
            self.metrics.wb_flush_lag.set(max(0.0, time.time() - since))
            items = {int(k): json.loads(v) for k, v in fields.items()}
            applied = await self._apply_in_db(flush_id, items)
            if fail_after_commit:
                raise TargetError("db_unavailable", f"simulated timeout after flush {flush_id} committed")
            await self._finish_flush(flush_id, items)
            pending = await self._pending_count()
            self.metrics.wb_backlog.set(pending)
            return {"flushed": len(items) if applied else 0, "pending": pending, "flush_id": flush_id,
                    "applied": applied}

    async def _apply_in_db(self, flush_id: str, items: dict[int, dict]) -> bool:
        """One transaction: record the flush id, then apply; False if this id was applied before."""
        db, table = self.service.db, self.service.domain.table
        classes = [self.metrics.key_class(key_id) for key_id in items]
        for key_class in classes:  # one per key (attempts), executed ones once a connection is held
            self.metrics.db_attempts.labels("flush", key_class).inc()
        ids = list(items)
        async with db.connection() as conn, conn.transaction():
            for key_class in classes:
                self.metrics.db_queries.labels("flush", key_class).inc()
            cur = await conn.execute("INSERT INTO cachestorm_flushes (flush_id, domain, items) VALUES (%s, %s, %s) "
                                     "ON CONFLICT DO NOTHING RETURNING 1", (flush_id, self.namespace, len(items)))
            if await cur.fetchone() is None:
                return False
            if self.service.domain.spec.counter:  # increments: add the deltas
                await conn.execute(DELTA_SQL.format(table=table),
                                   (ids, [int(items[i]["by"]) for i in ids], [int(items[i]["n"]) for i in ids]))
            else:
                await conn.execute(ABSOLUTE_SQL.format(table=table),
                                   (ids, [Jsonb(items[i]["rec"]["data"]) for i in ids],
                                    [int(items[i]["rec"]["version"]) for i in ids]))
        return True

    async def _finish_flush(self, flush_id: str, items: dict[int, dict]) -> None:
        keys = [self.service.domain.key(i).redis for i in items]
        await self.cache.call("flush", self._finish(
            keys=[self.flushing_key, self.pending_key, *keys],
            args=[flush_id, int(self.ttl * 1000), repr(time.time() + self.ttl), *[str(i) for i in items]]))

    async def _pending_count(self) -> int:
        pipe = self.cache.client.pipeline(transaction=False)
        pipe.hlen(self.pending_key)
        pipe.hlen(self.flushing_key)
        pending, flushing = await self.cache.call("flush", pipe.execute())
        return int(pending) + max(0, int(flushing) - 2)  # flushing holds __flush_id and __since too

    async def pending(self) -> dict:
        try:
            count = await self._pending_count()
            since = await self.cache.call("flush", self.cache.client.get(self.since_key))
        except CacheUnavailable as exc:
            raise TargetError(CACHE_UNAVAILABLE, str(exc)) from exc
        return {"pending": count, "oldest_s": round(time.time() - float(since), 3) if since else 0.0}


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else value
