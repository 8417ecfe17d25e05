"""The Redis side of every strategy: entries, fills (plain, NX, lease- or lock-guarded), invalidation.

Every call goes through a circuit breaker and short socket timeouts, so a slow or dead Redis costs
a request at most one timeout, and nothing while the breaker is open. Failures raise
CacheUnavailable and are counted in cachestorm_cache_errors_total{op}.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import redis.asyncio as aioredis
from cachestorm.targets.breaker import CircuitBreaker
from cachestorm.targets.deadlines import Deadlines
from cachestorm.targets.errors import CacheUnavailable
from cachestorm.targets.metrics import Metrics
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# Set only while the caller's lease/lock token is still the current one. A lease or lock that was
# deleted (invalidation) or taken over (expiry) makes the fill a no-op: a late fill cannot install
# a value read before a write.
GUARDED_SET = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if ARGV[4] == 'release' then redis.call('DEL', KEYS[2]) end
return 1
"""
# Set unless the cached entry holds a newer version of the row: a refresh that read the row before a
# write's overwrite must not put the older version back (stale-while-revalidate's background refresh).
FILL_IF_NOT_NEWER = """
local v = redis.call('GET', KEYS[1])
if v then
  local ok, cached = pcall(cjson.decode, v)
  if ok and type(cached['r']) == 'table' and tonumber(cached['r']['version']) > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""
# Meta-style lease get: the value if present and fresh (ARGV[2] = now; ARGV[3] = '1' skips this for a
# refresh); else a fresh token if nobody holds the lease; else wait.
LEASE_GET = """
if ARGV[3] ~= '1' then
  local v = redis.call('GET', KEYS[1])
  if v then
    local x = cjson.decode(v)['x']
    if x == 0 or x > tonumber(ARGV[2]) then return {'value', v} end
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'wait', ''} end
local token = tostring(redis.call('INCR', KEYS[3]))
redis.call('SET', KEYS[2], token, 'PX', ARGV[1])
return {'token', token}
"""
RELEASE_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


# An entry as this module writes it: the record last, as the exact JSON body of a read response,
# so a cache hit needs no JSON decode or encode (Lua scripts may reorder keys: then the slow path).
_FAST_ENTRY = re.compile(rb'\{"x":([-+.e0-9]+),"d":([-+.e0-9]+),"r":(\{"id":-?\d+,"version":(-?\d+),.*\})\}\Z',
                         re.S)


class StoredRecord:
    """A record as Redis holds it: `body` is its JSON as stored (a hit is sent on as is), and
    `record` is decoded from it only when someone asks."""

    __slots__ = ("_record", "body", "version")

    def __init__(self, record: dict | None, body: bytes | None = None, version: int | None = None):
        self._record = record
        self.body = body
        self.version = version

    @property
    def record(self) -> dict | None:
        if self._record is None and self.body is not None:
            self._record = json.loads(self.body)
        return self._record


class Entry(StoredRecord):
    """A cached read: the record (None = known not to exist), its logical expiry (wall s, 0 = never)
    and delta, the seconds its recompute took (XFetch needs it)."""

    __slots__ = ("expires_at", "delta")

    def __init__(self, record: dict | None, expires_at: float, delta: float = 0.0,
                 body: bytes | None = None, version: int | None = None):
        super().__init__(record, body, version)
        self.expires_at = expires_at
        self.delta = delta

    @property
    def absent(self) -> bool:
        return self._record is None and self.body is None

    def encode(self) -> str:
        r = self.record
        if r is None:
            return json.dumps({"x": self.expires_at, "d": self.delta, "r": None})
        body = json.dumps({"id": r["id"], "version": r["version"], "data": r["data"]}, separators=(",", ":"))
        return f'{{"x":{float(self.expires_at)!r},"d":{float(self.delta)!r},"r":{body}}}'

    @staticmethod
    def decode(raw: bytes | str) -> Entry:
        if isinstance(raw, str):
            raw = raw.encode()
        match = _FAST_ENTRY.match(raw)
        if match:
            return Entry(None, float(match[1]), float(match[2]), match[3], int(match[4]))
        obj = json.loads(raw)
        return Entry(obj["r"], obj["x"], obj.get("d", 0.0))

    def fresh(self, now: float) -> bool:
        return self.expires_at == 0 or now < self.expires_at


class Cache:
    def __init__(self, url: str, metrics: Metrics, timeout_ms: float = 250.0,
                 breaker: CircuitBreaker | None = None):
        self.timeout = timeout_ms / 1000.0
        # The per-call timeout is ours (`Deadlines`, one watchdog for all calls): redis-py's
        # socket_timeout wraps every send in asyncio.wait_for, a new task per command (~20% of a
        # cache hit's throughput), and even asyncio.timeout costs a timer per call (~5%).
        self.deadlines = Deadlines(self.timeout)
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=None, socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
        )
        self.metrics = metrics
        self.breaker = breaker or CircuitBreaker()
        self._guarded_set = self.client.register_script(GUARDED_SET)
        self._fill_if_not_newer = self.client.register_script(FILL_IF_NOT_NEWER)
        self._lease_get = self.client.register_script(LEASE_GET)
        self._release = self.client.register_script(RELEASE_IF_OWNER)

    async def close(self) -> None:
        await self.deadlines.close()
        await self.client.aclose()

    async def call(self, op: str, awaitable):
        """Run one Redis operation behind the breaker; map every failure to CacheUnavailable."""
        if not self.breaker.allow():
            awaitable.close()
            self.metrics.cache_errors.labels(op).inc()
            raise CacheUnavailable("circuit open")
        try:
            result = await self.deadlines.run(awaitable)
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            self.breaker.failure()
            self.metrics.cache_errors.labels(op).inc()
            raise CacheUnavailable(f"{op}: {exc.__class__.__name__}") from exc
        self.breaker.success()
        return result

    # ---------------------------------------------------------------- reads and fills

    async def get(self, key: str) -> Entry | None:
        raw = await self.call("get", self.client.get(key))
        return None if raw is None else Entry.decode(raw)

    async def fill(self, key: str, entry: Entry, px_ms: int, *, nx: bool = False,
                   guard: tuple[str, str] | None = None, versioned: bool = False) -> bool:
        """Install an entry. guard=(guard_key, token): only while that token is current.
        versioned: only if the cached entry is not a newer version of the row."""
        px = int(px_ms) if px_ms else None
        if guard is not None:
            guard_key, token = guard
            ok = await self.call("fill", self._guarded_set(
                keys=[key, guard_key], args=[token, entry.encode(), px or 2**31, "release"]))
            return bool(ok)
        if versioned and entry.record is not None:
            return bool(await self.call("fill", self._fill_if_not_newer(
                keys=[key], args=[entry.encode(), int(entry.record["version"]), px or 2**31])))
        return bool(await self.call("fill", self.client.set(key, entry.encode(), px=px, nx=nx)))

    async def fill_many(self, entries: list[tuple[str, Entry, int]], chunk: int = 1000,
                        timeout_s: float = 60.0) -> int:
        """Install many entries with pipelined SETs (no transaction): the warm-up's bulk prefill. Not
        behind the per-call deadline, which is for one command on the request path."""
        installed = 0
        try:
            async with asyncio.timeout(timeout_s):
                for start in range(0, len(entries), chunk):
                    pipe = self.client.pipeline(transaction=False)
                    for key, entry, px_ms in entries[start:start + chunk]:
                        pipe.set(key, entry.encode(), px=int(px_ms) if px_ms else None)
                    installed += sum(1 for ok in await pipe.execute() if ok)
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            self.metrics.cache_errors.labels("prefill").inc()
            raise CacheUnavailable(f"prefill: {exc.__class__.__name__}") from exc
        return installed

    async def overwrite(self, key: str, entry: Entry, px_ms: int) -> None:
        """A write's new value replaces the cached one; any outstanding lease is void."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(key, entry.encode(), px=int(px_ms) if px_ms else None)
        pipe.delete(lease_key(key))
        await self.call("overwrite", pipe.execute())

    async def invalidate(self, key: str) -> None:
        """Delete the value and its lease, so a fill that started before this write is refused."""
        await self.call("invalidate", self.client.delete(key, lease_key(key)))

    # ---------------------------------------------------------------- leases and locks

    async def lease_get(self, key: str, lease_ms: float, ignore_value: bool = False) -> tuple[str, object]:
        kind, payload = await self.call("lease", self._lease_get(
            keys=[key, lease_key(key), "cachestorm:lease-seq"],
            args=[int(lease_ms), repr(time.time()), "1" if ignore_value else "0"]))
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "value":
            return "value", Entry.decode(payload)
        return kind, (payload.decode() if isinstance(payload, bytes) else payload)

    async def lease_release(self, key: str, token: str) -> None:
        await self.call("lease", self._release(keys=[lease_key(key)], args=[token]))

    async def lock_acquire(self, key: str, lock_ms: float) -> str | None:
        """SET NX PX with a fencing token from a global sequence; None if someone else holds it."""
        token = str(await self.call("lock", self.client.incr("cachestorm:fence-seq")))
        ok = await self.call("lock", self.client.set(lock_key(key), token, nx=True, px=int(lock_ms)))
        return token if ok else None

    async def lock_held(self, key: str) -> bool:
        return bool(await self.call("lock", self.client.exists(lock_key(key))))

    async def lock_release(self, key: str, token: str) -> None:
        await self.call("lock", self._release(keys=[lock_key(key)], args=[token]))


def lease_key(key: str) -> str:
    return key + ":lease"


def lock_key(key: str) -> str:
    return key + ":lock"


def now() -> float:
    return time.time()
