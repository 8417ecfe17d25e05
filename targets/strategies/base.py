"""The strategy protocol and the cached read path every caching strategy shares.

A strategy answers `read(key, loader)` and `write(key, change)`. Protections plug into the read
path at fixed points (see targets/protections/base.py): the TTL of a fill, an early refresh on a
hit, around the load on a miss, and after a failed read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cachestorm.targets.cache import Cache, Entry, StoredRecord
from cachestorm.targets.errors import CacheUnavailable, TargetError

if TYPE_CHECKING:
    from cachestorm.targets.protections.base import Protection
    from cachestorm.targets.service import Service

Loader = Callable[[], Awaitable[dict | None]]


class Key:
    """A cached key. (A plain slotted class: built on every request, cheaper than a frozen dataclass.)"""

    __slots__ = ("id", "redis", "klass")

    def __init__(self, id: int, redis: str, klass: str):  # noqa: A002
        self.id = id            # the row id
        self.redis = redis      # the cache key, "<domain>:<id>"
        self.klass = klass      # "hot" | "rest"


class ReadResult(StoredRecord):
    """record (None: the key does not exist, 404) and source (X-Cache: hit|miss|stale|bypass|negative|
    fallback). A cache hit carries the stored JSON `body` and `version` and decodes the record lazily."""

    __slots__ = ("source",)

    def __init__(self, record: dict | None, source: str, body: bytes | None = None, version: int | None = None):
        super().__init__(record, body, version)
        self.source = source

    @staticmethod
    def of(entry: Entry, source: str) -> ReadResult:
        if entry.absent:
            return ReadResult(None, "negative")
        return ReadResult(entry._record, source, entry.body, entry.version)


@dataclass
class Change:
    """A write. `commit` does it in PostgreSQL and returns the committed row (None: no such id);
    write-behind instead applies `mode`/`payload` in Redis and flushes later."""

    mode: str                                     # "replace" | "merge" | "incr" | "delete"
    payload: dict                                 # new data, a patch, or {"by": n}
    commit: Callable[[], Awaitable[dict | None]]
    load_current: Loader                          # the row as PostgreSQL has it now (no recompute cost)
    request_id: str | None = None


class Strategy(Protocol):
    name: str

    async def read(self, key: Key, loader: Loader) -> ReadResult: ...

    async def write(self, key: Key, change: Change) -> dict | None: ...

    def staleness_bound_s(self) -> float: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(slots=True)
class LoadContext:
    guard: tuple[str, str] | None = None   # (lease/lock key, token): the fill is conditional on it
    fill: bool = True                      # False: serve the loaded value, do not cache it
    refresh: bool = False                  # a refresh of a value we still hold (early or stale)
    held: ReadResult | None = None         # what to serve if someone else is already refreshing


class CachedStrategy:
    """Reads: GET; fresh -> hit; (stale-while-revalidate) stale -> serve + refresh; else load and fill.
    Writes: commit in PostgreSQL, then `after_commit` (nothing, delete, or overwrite)."""

    name = ""
    expires = True          # False: entries live until invalidated (no TTL)
    serves_stale = False    # stale-while-revalidate
    fill_nx = False         # write-behind: never overwrite a newer value written meanwhile
    fill_versioned = False  # a fill never replaces a newer version (a refresh racing a write's overwrite)
    fresh_after_write = True  # a write updates or invalidates the cache; False: only the TTL ends staleness

    def __init__(self, service: Service, protections: list[Protection]):
        self.service = service
        self.cache: Cache = service.cache
        self.metrics = service.metrics
        self.settings = service.settings
        self.ttl = service.ttl
        self.protections = sorted(protections, key=lambda p: p.order)
        base = _protection_base()
        self._chain = [p for p in self.protections if type(p).around_load is not base.around_load]
        self._early = [p for p in self.protections if type(p).refresh_early is not base.refresh_early]
        self._on_error = [p for p in self.protections if type(p).on_error is not base.on_error]
        self._remember = [p for p in self.protections if type(p).remember is not base.remember]
        self._negative = next((p for p in self.protections if p.caches_absence), None)
        self.keep_extra_s = max([p.keep_extra_s() for p in self.protections] +
                                [self.settings.max_stale if self.serves_stale else 0.0])
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    def staleness_bound_s(self) -> float:
        """What this strategy promises: fresh reads once a write returned, or staleness up to the TTL
        (plus any stale-serving grace). The consistency checker measures reads against it."""
        return 0.0 if self.fresh_after_write else self.ttl + self.keep_extra_s

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # ---------------------------------------------------------------- reads

    async def read(self, key: Key, loader: Loader) -> ReadResult:
        try:
            result = await self._read(key, loader)
        except TargetError as error:
            for protection in self._on_error:
                fallback = await protection.on_error(key, error)
                if fallback is not None:
                    return fallback
            raise
        if self._remember and result.record is not None:
            for protection in self._remember:
                protection.remember(key, result.record)
        return result

    async def _read(self, key: Key, loader: Loader) -> ReadResult:
        try:
            entry = await self.cache.get(key.redis)
        except CacheUnavailable:  # degrade to the database; do not try to fill a failing cache
            return ReadResult(await loader(), "bypass")
        if entry is not None:
            now = time.time()
            if entry.fresh(now):
                served = ReadResult.of(entry, "hit")
                if not self._early or not any(p.refresh_early(entry, now) for p in self._early):
                    return served
                return await self._load(key, loader, LoadContext(refresh=True, held=served))
            if self.serves_stale and now < entry.expires_at + self.settings.max_stale:
                served = ReadResult.of(entry, "stale")
                self._refresh_in_background(key, loader, served)
                return served
        return await self._load(key, loader, LoadContext())

    async def _load(self, key: Key, loader: Loader, ctx: LoadContext) -> ReadResult:
        async def call(ctx: LoadContext, depth: int = 0) -> ReadResult:
            if depth == len(self._chain):
                return await self._load_and_fill(key, loader, ctx)
            return await self._chain[depth].around_load(key, lambda c: call(c, depth + 1), ctx)

        try:
            return await call(ctx)
        except CacheUnavailable:  # a lock/lease call failed before loading: load without the cache
            return ReadResult(await loader(), "bypass")

    async def _load_and_fill(self, key: Key, loader: Loader, ctx: LoadContext) -> ReadResult:
        started = time.monotonic()
        record = await loader()
        delta = time.monotonic() - started
        self.metrics.recompute(key.id)
        if ctx.fill and (record is not None or self._negative is not None):
            entry, px_ms = self.entry_for(record, delta)
            try:
                installed = await self.cache.fill(key.redis, entry, px_ms, nx=self.fill_nx, guard=ctx.guard,
                                                  versioned=self.fill_versioned)
                if not installed and ctx.guard is not None and ctx.guard[0].endswith(":lease"):
                    self.metrics.lease_refused.inc()
            except CacheUnavailable:
                pass
        return ReadResult(record, "miss")

    def entry_for(self, record: dict | None, delta: float = 0.0) -> tuple[Entry, int]:
        """The entry to cache and its physical TTL in ms (0 = no TTL)."""
        if record is None:
            ttl = self._negative.absence_ttl
            return Entry(None, time.time() + ttl, delta), int(ttl * 1000)
        if not self.expires:
            return Entry(record, 0, delta), 0
        ttl = self.ttl
        for protection in self.protections:
            ttl = protection.fill_ttl(ttl)
        return Entry(record, time.time() + ttl, delta), int((ttl + self.keep_extra_s) * 1000)

    def prefill_entry(self, record: dict, rng) -> tuple[Entry, int]:
        """The entry a cache in steady state holds: filled at a uniformly random moment of its last
        lifetime (the strategy's TTL, protections such as jitter included), so the expiries of a
        prefilled key space are spread evenly instead of landing together one TTL later."""
        entry, px_ms = self.entry_for(record, self.settings.recompute_ms / 1000.0)
        if not px_ms or entry.expires_at == 0:
            return entry, px_ms
        elapsed = (entry.expires_at - time.time()) * rng.random()
        entry.expires_at -= elapsed
        return entry, max(1, px_ms - int(elapsed * 1000))

    def _refresh_in_background(self, key: Key, loader: Loader, served: ReadResult) -> None:
        if key.redis in self._refreshing:  # one refresh per key per process
            return
        self._refreshing.add(key.redis)
        task = asyncio.create_task(self._refresh(key, loader, served))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, key: Key, loader: Loader, served: ReadResult) -> None:
        try:
            await self._load(key, loader, LoadContext(refresh=True, held=served))
        except Exception:  # noqa: BLE001 - a failed refresh leaves the stale value; the next read retries
            pass
        finally:
            self._refreshing.discard(key.redis)

    # ---------------------------------------------------------------- writes

    async def write(self, key: Key, change: Change) -> dict | None:
        record = await change.commit()
        if record is not None:
            try:
                if change.mode == "delete":
                    await self.after_delete(key)
                else:
                    await self.after_commit(key, record)
            except CacheUnavailable:  # committed, cache not updated: stale until TTL (counted)
                pass
        return record

    async def after_commit(self, key: Key, record: dict) -> None:
        """What the cache learns of a committed write. Default: nothing (staleness <= TTL)."""

    async def after_delete(self, key: Key) -> None:
        """What the cache learns of a committed delete: a strategy that is fresh after a write (it
        invalidates or overwrites) forgets the key; one that is not (cache-aside) serves it until the TTL,
        as it would an overwritten row."""
        if self.fresh_after_write:
            await self.cache.invalidate(key.redis)


def _protection_base():
    from cachestorm.targets.protections.base import Protection

    return Protection
