"""profiles: read-through with explicit invalidation + TTL by default. The owner reads their own
writes: `X-User-Id` equal to the profile id routes the read past the cache."""

from __future__ import annotations

from cachestorm.targets.domains.base import Domain, jsonb

from cachestorm.core.domains import DOMAINS


class Profiles(Domain):
    spec = DOMAINS["profiles"]

    def routes(self):
        return [(self.spec.route, self.get, ["GET"]), (self.spec.route, self.put, ["PUT"]),
                (self.spec.route, self.delete_route, ["DELETE"])]

    async def get(self, request):
        key_id = request.path_params["id"]
        owner = request.headers.get("x-user-id") == str(key_id)
        result = await self.read(key_id, bypass_cache=owner)
        return self.read_response(result)

    async def put(self, request):
        from cachestorm.targets.app import BadRequest

        key_id = request.path_params["id"]
        data = (await self.json_body(request)).get("data")
        if not isinstance(data, dict):
            raise BadRequest('body must be {"data": {...}}')
        record = await self.write(key_id, "replace", data, "data = %s", (jsonb(data),),
                                  request.headers.get("x-request-id"))
        return self.record_response(record, None)
