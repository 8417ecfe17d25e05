"""The ASGI app of a target (Starlette) and `run(settings)`, which serves it with uvicorn."""

from __future__ import annotations

import contextlib
import json
import time

from cachestorm.targets.errors import TargetError
from cachestorm.targets.service import Service
from cachestorm.targets.settings import TargetSettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cachestorm.core.errors import CachestormError


class BadRequest(Exception):
    pass


def json_response(body: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status, headers, media_type="application/json")


def endpoint(service: Service, route: str, handler):
    """Wrap a handler: errors become JSON bodies naming their kind; every request is counted."""
    metrics = service.metrics

    async def wrapped(request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except TargetError as exc:
            response = json_response({"error": exc.kind, "detail": exc.detail}, exc.status, {"X-Version": "0"})
        except BadRequest as exc:
            response = json_response({"error": "bad_request", "detail": str(exc)}, 400, {"X-Version": "0"})
        except Exception as exc:  # noqa: BLE001 - 5xx bodies always name the kind
            response = json_response({"error": "internal", "detail": f"{exc.__class__.__name__}: {exc}"[:300]},
                                     500, {"X-Version": "0"})
        metrics.request(route, response.status_code, time.perf_counter() - started)
        return response

    return wrapped


def build_app(settings: TargetSettings) -> Starlette:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    service = Service(settings)

    async def healthz(request: Request) -> Response:
        return json_response({"ok": True, "domain": settings.domain, "strategy": service.strategy_spec,
                              "ttl": service.ttl, "instance_id": settings.instance_id,
                              "staleness_bound_s": service.strategy.staleness_bound_s(),
                              **service.domain.promises(),
                              "cache_breaker_open": service.cache.breaker.is_open}, headers={"X-Version": "0"})

    async def prefill(request: Request) -> Response:
        """The conductor's warm-up (loopback only, like every target): {"keys": N, "seed": S}."""
        body = await service.domain.json_body(request)
        keys, seed = body.get("keys"), body.get("seed")
        if not isinstance(keys, int) or keys < 0 or not (seed is None or isinstance(seed, int)):
            raise BadRequest('body must be {"keys": N >= 0, "seed": int or null}')
        started = time.perf_counter()
        done = await service.prefill(keys, seed)
        return json_response({**done, "seconds": round(time.perf_counter() - started, 3)})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # the domain's routes first: Starlette tries routes in order, and the hot path is a domain GET
    routes = [Route(path, endpoint(service, path, handler), methods=methods)
              for path, handler, methods in service.domain.routes()]
    routes += [Route("/healthz", healthz), Route("/metrics", metrics),
               Route("/prefill", endpoint(service, "/prefill", prefill), methods=["POST"])]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return app


def prepare(settings: TargetSettings) -> None:
    """Checks and schema setup before serving, so bad input fails with one line, not a traceback."""
    from cachestorm.core.domains import domain_spec
    from cachestorm.core.processes import port_is_free

    domain_spec(settings.domain)
    if not port_is_free(settings.port, settings.host):
        raise CachestormError(f"port {settings.port} on {settings.host} is in use; pick another --port")
    if settings.strategy != "default":
        from cachestorm.targets.strategies import parse_spec

        parse_spec(settings.strategy)
    prepare_schema(settings)


def prepare_schema(settings: TargetSettings, reset: bool = False) -> None:
    from cachestorm.targets.db import prepare_database

    from cachestorm.core.domains import domain_spec

    spec = domain_spec(settings.domain)
    prepare_database(settings.postgres_url, spec.table, spec.seed_sql, settings.rows, reset=reset)


def run(settings: TargetSettings) -> None:
    import uvicorn

    prepare(settings)
    app = build_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False, lifespan="on")
