"""catalog (products): stale-while-revalidate with a long TTL by default; writes overwrite the
cached value, never evict it."""

from __future__ import annotations

from cachestorm.targets.domains.base import Domain, jsonb

from cachestorm.core.domains import DOMAINS


class Catalog(Domain):
    spec = DOMAINS["catalog"]

    def routes(self):
        return [(self.spec.route, self.get, ["GET"]), (self.spec.route, self.put, ["PUT"]),
                (self.spec.route, self.delete_route, ["DELETE"])]

    async def get(self, request):
        result = await self.read(request.path_params["id"])
        return self.read_response(result)

    async def put(self, request):
        from cachestorm.targets.app import BadRequest

        data = (await self.json_body(request)).get("data")
        if not isinstance(data, dict):
            raise BadRequest('body must be {"data": {...}}')
        record = await self.write(request.path_params["id"], "replace", data, "data = %s", (jsonb(data),),
                                  request.headers.get("x-request-id"))
        return self.record_response(record, None)
