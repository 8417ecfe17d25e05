"""What every domain service shares: keys, the read and write paths through the strategy, responses."""

from __future__ import annotations

import json

from cachestorm.targets.strategies.base import CachedStrategy, Change, Key, ReadResult
from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import Response

from cachestorm.core.domains import DomainSpec
from cachestorm.core.hitratio import FAILED


class Domain:
    spec: DomainSpec   # the domain's facts (cachestorm/core/domains.py): table, keys, routes, defaults

    def __init__(self, service):
        self.service = service

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def table(self) -> str:
        return self.spec.table

    @property
    def default_ttl(self) -> float:
        return self.spec.default_ttl_s

    def routes(self) -> list[tuple[str, object, list[str]]]:
        raise NotImplementedError

    def promises(self) -> dict[str, float]:
        """The domain's own stated bounds, as /healthz tells them (the checker holds runs to them)."""
        return {}

    def key(self, key_id: int) -> Key:
        return Key(key_id, self.spec.key(key_id), "hot" if key_id <= self.service.settings.hot_keys else "rest")

    async def read(self, key_id: int, bypass_cache: bool = False) -> ReadResult:
        service = self.service
        key = self.key(key_id)
        db, table = service.db, self.table

        async def loader():
            return await db.read(table, key_id)

        if bypass_cache:
            result = ReadResult(await loader(), "bypass")
        else:
            try:
                result = await service.strategy.read(key, loader)
            except Exception:
                # a lookup that ended in an error (no pool connection, Redis gone) was not served from the
                # cache: left uncounted, an incident's failing misses would lift its hit ratio
                if isinstance(service.strategy, CachedStrategy):
                    service.metrics.result(FAILED, key.klass)
                raise
        service.metrics.result(result.source, key.klass)
        return result

    async def write(self, key_id: int, mode: str, payload: dict, set_sql: str, params: tuple,
                    request_id: str | None) -> dict | None:
        service = self.service
        db, table = service.db, self.table

        async def commit():
            return await db.write(table, set_sql, params, key_id, request_id)

        async def load_current():
            return await db.read(table, key_id, recompute=False)

        change = Change(mode, payload, commit, load_current, request_id)
        return await service.strategy.write(self.key(key_id), change)

    async def delete(self, key_id: int, request_id: str | None) -> dict | None:
        """Delete the row through the strategy (which decides what the cache forgets); the deleted row
        with the delete's version, None if there was none."""
        service = self.service
        db, table = service.db, self.table

        async def commit():
            return await db.delete(table, key_id, request_id)

        async def load_current():
            return await db.read(table, key_id, recompute=False)

        return await service.strategy.write(self.key(key_id), Change("delete", {}, commit, load_current, request_id))

    async def delete_route(self, request):
        """DELETE /<items>/{id}: 200 with the deleted row and the delete's version, 404 if absent."""
        record = await self.delete(request.path_params["id"], request.headers.get("x-request-id"))
        return self.record_response(record, None)

    # ---------------------------------------------------------------- request/response helpers

    @staticmethod
    async def json_body(request: Request) -> dict:
        from cachestorm.targets.app import BadRequest

        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as exc:
            raise BadRequest("body is not JSON") from exc
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    @staticmethod
    def read_response(result: ReadResult) -> Response:
        """A read's response; a cache hit sends the stored JSON as is."""
        if result.body is not None:
            return Response(result.body, 200, {"X-Version": str(result.version), "X-Cache": result.source},
                            media_type="application/json")
        return Domain.record_response(result.record, result.source)

    @staticmethod
    def record_response(record: dict | None, source: str | None, extra: dict | None = None) -> Response:
        headers = {"X-Version": str(record["version"]) if record else "0"}
        if source:
            headers["X-Cache"] = source
        if record is None:
            body = {"error": "not_found", "version": 0}
            status = 404
        else:
            body = {"id": record["id"], "version": record["version"], "data": record["data"]}
            status = 200
        if extra and record is not None:
            body.update(extra)
        return Response(json.dumps(body, separators=(",", ":")), status, headers, media_type="application/json")


def jsonb(value) -> Jsonb:
    return Jsonb(value)
