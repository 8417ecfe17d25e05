"""counters: write-behind increments by default (acknowledged after Redis, flushed to PostgreSQL in
idempotent batches). Every increment carries X-Request-Id; a repeated id is applied once."""

from __future__ import annotations

from cachestorm.targets.app import json_response
from cachestorm.targets.domains.base import Domain

from cachestorm.core.domains import DOMAINS


class Counters(Domain):
    spec = DOMAINS["counters"]

    def routes(self):
        resource = f"/{self.spec.resource}"
        return [(f"{resource}/flush", self.flush, ["POST"]), (f"{resource}/pending", self.pending, ["GET"]),
                (self.spec.route, self.get, ["GET"]), (f"{self.spec.route}/incr", self.incr, ["POST"])]

    async def get(self, request):
        result = await self.read(request.path_params["id"])
        return self.record_response(result.record, result.source, _count(result.record))

    async def incr(self, request):
        from cachestorm.targets.app import BadRequest

        by = (await self.json_body(request)).get("by", 1)
        if not isinstance(by, int) or isinstance(by, bool):
            raise BadRequest('body must be {"by": <integer>}')
        record = await self.write(
            request.path_params["id"], "incr", {"by": by},
            "data = jsonb_set(data, '{count}', to_jsonb(COALESCE((data->>'count')::bigint, 0) + %s))", (by,),
            request.headers.get("x-request-id"))
        return self.record_response(record, None, _count(record))

    async def flush(self, request):
        strategy = self.service.strategy
        if not hasattr(strategy, "flush"):
            return json_response({"flushed": 0, "pending": 0}, headers={"X-Version": "0"})
        report = await strategy.flush(fail_after_commit=request.query_params.get("fail") == "after_commit")
        return json_response(report, headers={"X-Version": "0"})

    async def pending(self, request):
        strategy = self.service.strategy
        report = await strategy.pending() if hasattr(strategy, "pending") else {"pending": 0, "oldest_s": 0.0}
        return json_response(report, headers={"X-Version": "0"})


def _count(record: dict | None) -> dict:
    return {"count": int(record["data"].get("count", 0))} if record else {}
