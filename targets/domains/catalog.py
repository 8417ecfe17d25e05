"""catalog (products): stale-while-revalidate with a long TTL by default; writes overwrite the
cached value, never evict it."""

from __future__ import annotations

from cachestorm.targets.domains.base import Domain, jsonb


class Catalog(Domain):
    name = "catalog"
    table = "products"
    default_strategy = "stale-while-revalidate"
    default_ttl = 300.0
    seed_sql = "jsonb_build_object('name', 'product-' || g, 'price_cents', 100 + mod(g, 9900))"

    def routes(self):
        return [("/products/{id:int}", self.get, ["GET"]), ("/products/{id:int}", self.put, ["PUT"]),
                ("/products/{id:int}", self.delete_route, ["DELETE"])]

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
