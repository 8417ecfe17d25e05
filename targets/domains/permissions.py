"""permissions: a short TTL and explicit invalidation by default. One row per user holds their
permissions ({"perm": true|false}). Stated bound: a revoked permission must stop being granted
within --revoke-bound seconds (default TTL + 1 s). Each revoke is recorded in Redis
(`permissions:revoked:<user>` perm -> {version, at}); a read that grants a permission at a version
older than its revoke, later than revoke + bound, is a violation: counted in
cachestorm_permission_violations_total and in GET /permissions/violations (this instance and all)."""

from __future__ import annotations

import json
import time

from cachestorm.targets.app import json_response
from cachestorm.targets.domains.base import Domain, jsonb
from cachestorm.targets.errors import CacheUnavailable

from cachestorm.core.domains import DOMAINS

SPEC = DOMAINS["permissions"]
VIOLATIONS_KEY = SPEC.key("violations")


class Permissions(Domain):
    spec = SPEC

    def __init__(self, service):
        super().__init__(service)
        self.violations = 0

    @property
    def bound_s(self) -> float:
        s = self.service.settings
        return s.revoke_bound if s.revoke_bound is not None else self.service.ttl + 1.0

    def promises(self) -> dict[str, float]:
        return {"revoke_bound_s": self.bound_s}

    def routes(self):
        resource = f"/{self.spec.resource}"
        return [(f"{resource}/violations", self.get_violations, ["GET"]),
                (f"{resource}/{{user:int}}/{{perm}}", self.check, ["GET"]),
                (f"{resource}/{{user:int}}/{{perm}}", self.put, ["PUT"])]

    async def check(self, request):
        user, perm = request.path_params["user"], request.path_params["perm"]
        result = await self.read(user)
        record = result.record
        if record is None:
            return self.record_response(None, result.source)
        granted = bool(record["data"].get(perm, False))
        if granted:
            await self._check_violation(user, perm, record["version"])
        return json_response({"user": user, "perm": perm, "granted": granted, "version": record["version"]},
                             headers={"X-Cache": result.source, "X-Version": str(record["version"])})

    async def put(self, request):
        from cachestorm.targets.app import BadRequest

        user, perm = request.path_params["user"], request.path_params["perm"]
        granted = (await self.json_body(request)).get("granted")
        if not isinstance(granted, bool):
            raise BadRequest('body must be {"granted": true|false}')
        record = await self.write(user, "merge", {perm: granted}, "data = data || %s", (jsonb({perm: granted}),),
                                  request.headers.get("x-request-id"))
        if record is None:
            return self.record_response(None, None)
        await self._record_revoke(user, perm, granted, record["version"])
        return json_response({"user": user, "perm": perm, "granted": granted, "version": record["version"]},
                             headers={"X-Version": str(record["version"])})

    async def get_violations(self, request):
        try:
            total = int(await self.service.cache.call("violations", self.service.cache.client.get(VIOLATIONS_KEY))
                        or 0)
        except CacheUnavailable:
            total = None
        return json_response({"bound_s": self.bound_s, "violations": self.violations,
                              "violations_all_instances": total}, headers={"X-Version": "0"})

    async def _record_revoke(self, user: int, perm: str, granted: bool, version: int) -> None:
        cache = self.service.cache
        key = _revoked_key(user)
        try:
            if granted:
                await cache.call("revoke", cache.client.hdel(key, perm))
            else:
                value = json.dumps({"version": version, "at": time.time()})
                await cache.call("revoke", cache.client.hset(key, perm, value))
        except CacheUnavailable:
            pass  # counted in cache_errors_total{op="revoke"}; this revoke goes unchecked

    async def _check_violation(self, user: int, perm: str, version: int) -> None:
        cache = self.service.cache
        try:
            raw = await cache.call("revoke", cache.client.hget(_revoked_key(user), perm))
        except CacheUnavailable:
            return
        if raw is None:
            return
        revoke = json.loads(raw)
        if version < revoke["version"] and time.time() > revoke["at"] + self.bound_s:
            self.violations += 1
            self.service.metrics.permission_violations.inc()
            try:
                await cache.call("violations", cache.client.incr(VIOLATIONS_KEY))
            except CacheUnavailable:
                pass


def _revoked_key(user: int) -> str:
    return SPEC.key(f"revoked:{user}")
