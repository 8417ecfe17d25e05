"""The Toxiproxy v2 HTTP API over a collection of proxies (routes, statuses, error bodies, headers
as in Toxiproxy's api.go, checked side by side in tests/test_proxy_differential.py), plus
cachestorm's /metrics families, per-proxy "stats" and GET /cachestorm (what this server is)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import time
from typing import Any

from cachestorm.chaos.proxy import EXPIRIES_PATH, INFO_PATH, fastpath, gojson, metrics
from cachestorm.chaos.proxy.errors import (
    BAD_REQUEST_BODY,
    MISSING_FIELD,
    PROXY_ALREADY_EXISTS,
    PROXY_NOT_FOUND,
    TOXIC_NOT_FOUND,
    ApiError,
)
from cachestorm.chaos.proxy.expiry import Expiries
from cachestorm.chaos.proxy.guard import AddressGuard
from cachestorm.chaos.proxy.http import Request, Response
from cachestorm.chaos.proxy.proxy import Proxy, check_name

TOXIPROXY_VERSION = "2.12.0"  # the API version we mirror
CACHESTORM_PROXY_VERSION = "0.1.0"
REQUEST_ID_HEADER = "X-Toxiproxy-Request-Id"

_ROUTES = [
    (re.compile(r"^/reset$"), {"POST": "reset"}),
    (re.compile(r"^/version$"), {"GET": "version"}),
    (re.compile(rf"^{INFO_PATH}$"), {"GET": "info"}),
    (re.compile(r"^/metrics$"), {"GET": "metrics"}),
    (re.compile(r"^/populate$"), {"POST": "populate"}),
    (re.compile(r"^/proxies$"), {"GET": "proxy_index", "POST": "proxy_create"}),
    (re.compile(r"^/proxies/([^/]+)$"),
     {"GET": "proxy_show", "POST": "proxy_update", "PATCH": "proxy_update", "DELETE": "proxy_delete"}),
    (re.compile(r"^/proxies/([^/]+)/toxics$"), {"GET": "toxic_index", "POST": "toxic_create"}),
    (re.compile(r"^/proxies/([^/]+)/toxics/([^/]+)$"),
     {"GET": "toxic_show", "POST": "toxic_update", "PATCH": "toxic_update", "DELETE": "toxic_delete"}),
    # cachestorm's own, under its own prefix (a Toxiproxy client never calls these)
    (re.compile(rf"^{EXPIRIES_PATH}$"), {"GET": "expiry_index", "POST": "expiry_create"}),
    (re.compile(rf"^{EXPIRIES_PATH}/([^/]+)$"), {"DELETE": "expiry_delete"}),
]  # fmt: skip
_PLAIN = "text/plain; charset=utf-8"
_NOSNIFF = {"X-Content-Type-Options": "nosniff"}
# Go's names of the anonymous types Toxiproxy decodes into (they appear in its error messages)
_POPULATE_TYPE = 'struct { toxiproxy.Proxy; Enabled *bool "json:\\"enabled\\"" }'
_TOXIC_UPDATE_TYPE = 'struct { Attributes interface {} "json:\\"attributes\\""; Toxicity float32 "json:\\"toxicity\\"" }'


class _RequestIds:
    """IDs shaped like the rs/xid ones Toxiproxy sends: 12 bytes (time, machine, pid, counter) in
    lowercase base32hex, 20 characters."""

    def __init__(self):
        self.machine_pid = os.urandom(3) + (os.getpid() & 0xFFFF).to_bytes(2, "big")
        self.counter = itertools.count(int.from_bytes(os.urandom(3), "big"))

    def next(self) -> str:
        raw = int(time.time()).to_bytes(4, "big") + self.machine_pid + (next(self.counter) & 0xFFFFFF).to_bytes(3, "big")
        return base64.b32hexencode(raw).decode().rstrip("=").lower()


def _json(status: int, value: Any) -> Response:
    return Response(status, gojson.dumps(value).encode())


def _error(err: ApiError) -> Response:
    # Go's http.Error: text/plain content type, JSON text, trailing newline
    body = gojson.dumps({"error": err.message, "status": err.status}) + "\n"
    return Response(err.status, body.encode(), _PLAIN, dict(_NOSNIFF))


def _object(body: bytes, go_type: str) -> dict:
    data = gojson.loads(body)
    if not isinstance(data, dict):
        raise BAD_REQUEST_BODY.joined(f"json: cannot unmarshal {gojson.kind(data)} into Go value of type {go_type}")
    return data


def _string_field(data: dict, key: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BAD_REQUEST_BODY.joined(
            f"json: cannot unmarshal {gojson.kind(value)} into Go struct field Proxy.{key} of type string"
        )
    return value


def _bool_field(data: dict, key: str, default: bool) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BAD_REQUEST_BODY.joined(
            f"json: cannot unmarshal {gojson.kind(value)} into Go struct field Proxy.{key} of type bool"
        )
    return value


class ApiApp:
    def __init__(self, loop: asyncio.AbstractEventLoop, guard: AddressGuard | None = None):
        self.loop = loop
        self.guard = guard or AddressGuard()
        self.proxies: dict[str, Proxy] = {}
        self.lock = asyncio.Lock()  # API changes one at a time; the data path never takes it
        self.expiries = Expiries(loop, self.proxies, self.lock)
        self.request_ids = _RequestIds()
        self.retired_bytes = metrics.RetiredBytes()

    async def __call__(self, request: Request) -> Response:
        for pattern, methods in _ROUTES:
            match = pattern.match(request.path)
            if match is None:
                continue
            handler_name = methods.get(request.method)
            if handler_name is None:
                return Response(405, b"", None)  # gorilla/mux: bare, no middleware ran
            response = await self._routed(request, handler_name, match.groups())
            response.headers[REQUEST_ID_HEADER] = self.request_ids.next()
            return response
        return Response(404, b"404 page not found\n", _PLAIN, dict(_NOSNIFF))

    async def _routed(self, request: Request, handler_name: str, args: tuple) -> Response:
        """Toxiproxy's middleware order: request id, then the browser guard, then the handler."""
        if request.headers.get("user-agent", "").startswith("Mozilla/"):
            return Response(403, b"User agent not allowed\n", _PLAIN, dict(_NOSNIFF))
        try:
            async with self.lock:
                return await getattr(self, handler_name)(request, *args)
        except ApiError as err:
            return _error(err)

    # -- helpers ------------------------------------------------------------------
    def _get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise PROXY_NOT_FOUND
        return proxy

    async def add_proxy(self, name: str, listen: str, upstream: str, enabled: bool) -> Proxy:
        if name in self.proxies:
            raise PROXY_ALREADY_EXISTS
        self.guard.check(listen, upstream)
        proxy = Proxy(self.loop, name, listen, upstream, self.expiries)
        if enabled:
            await proxy.start()
        self.proxies[name] = proxy
        return proxy

    def close(self) -> None:
        self.expiries.close()
        for proxy in self.proxies.values():
            proxy.stop()
        fastpath.release(self.loop)

    # -- routes -------------------------------------------------------------------
    async def version(self, request: Request) -> Response:
        # byte for byte Toxiproxy's Sprintf (clients parse it; some compare it)
        return Response(200, f'{{"version": "{TOXIPROXY_VERSION}"}}\n'.encode(), "application/json;charset=utf-8")

    async def info(self, request: Request) -> Response:
        """What this server is: cachestorm's proxy, its version, which forwarding engines run."""
        return _json(200, {"cachestorm": CACHESTORM_PROXY_VERSION, "toxiproxy_api": TOXIPROXY_VERSION,
                           "fastpath": fastpath.available(), "sockmap": fastpath.kernel_available()})  # fmt: skip

    async def metrics(self, request: Request) -> Response:
        text = metrics.render(self.proxies.values(), self.retired_bytes)
        return Response(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    async def reset(self, request: Request) -> Response:
        for proxy in list(self.proxies.values()):
            if not proxy.enabled:
                await proxy.start()
            proxy.reset_toxics()
        return Response(204)

    async def proxy_index(self, request: Request) -> Response:
        return _json(200, {name: proxy.to_json() for name, proxy in self.proxies.items()})

    async def proxy_create(self, request: Request) -> Response:
        data = _object(request.body, "toxiproxy.Proxy")
        name = _string_field(data, "name")
        listen = _string_field(data, "listen")
        upstream = _string_field(data, "upstream")
        enabled = _bool_field(data, "enabled", True)
        if not name:
            raise MISSING_FIELD.joined("name")
        if not upstream:
            raise MISSING_FIELD.joined("upstream")
        check_name(name)
        proxy = await self.add_proxy(name, listen, upstream, enabled)
        return _json(201, proxy.to_json())

    async def populate(self, request: Request) -> Response:
        try:
            data = gojson.loads(request.body)
            if not isinstance(data, list):
                raise BAD_REQUEST_BODY.joined(f"json: cannot unmarshal {gojson.kind(data)} into Go value of type []{_POPULATE_TYPE}")
            wanted = []
            for index, item in enumerate(data, start=1):
                if not isinstance(item, dict):
                    raise BAD_REQUEST_BODY.joined(f"json: cannot unmarshal {gojson.kind(item)} into Go value of type {_POPULATE_TYPE}")
                name, upstream = _string_field(item, "name"), _string_field(item, "upstream")
                if not name:
                    raise MISSING_FIELD.joined(f"name at proxy {index}")
                if not upstream:
                    raise MISSING_FIELD.joined(f"upstream at proxy {index}")
                check_name(name)
                wanted.append((name, _string_field(item, "listen"), upstream, _bool_field(item, "enabled", True)))
        except ApiError as err:
            return _json(err.status, {"error": err.message, "status": err.status, "proxies": None})
        done: list[Proxy] = []
        try:
            for name, listen, upstream, enabled in wanted:
                done.append(await self._add_or_replace(name, listen, upstream, enabled))
        except ApiError as err:
            listed = [p.to_json() for p in done] or None
            return _json(err.status, {"error": err.message, "status": err.status, "proxies": listed})
        return _json(201, {"proxies": [p.to_json() for p in done] or None})

    async def _add_or_replace(self, name: str, listen: str, upstream: str, enabled: bool) -> Proxy:
        """Toxiproxy's AddOrReplace: the same address (resolved) and upstream keep the proxy as it
        is, toxics and connections included; else a new proxy takes the name once it started."""
        existing = self.proxies.get(name)
        if existing is not None and not await existing.differs(listen, upstream):
            return existing
        self.guard.check(listen, upstream)  # refused: the existing proxy is left as it is
        if existing is not None:
            existing.stop()
        proxy = Proxy(self.loop, name, listen, upstream, self.expiries)
        if enabled:
            await proxy.start()
        if existing is not None:
            existing.reset_toxics()
            self.retired_bytes.add(existing)
        self.proxies[name] = proxy
        return proxy

    async def proxy_show(self, request: Request, name: str) -> Response:
        return _json(200, self._get(name).to_json())

    async def proxy_update(self, request: Request, name: str) -> Response:
        proxy = self._get(name)
        data = _object(request.body, "toxiproxy.Proxy")
        listen, upstream = _string_field(data, "listen", proxy.listen), _string_field(data, "upstream", proxy.upstream)
        self.guard.check(listen, upstream)
        await proxy.update(listen, upstream, _bool_field(data, "enabled", proxy.enabled))
        return _json(200, proxy.to_json())

    async def proxy_delete(self, request: Request, name: str) -> Response:
        proxy = self._get(name)
        proxy.stop()
        proxy.reset_toxics()
        self.retired_bytes.add(proxy)
        del self.proxies[name]
        return Response(204)

    async def toxic_index(self, request: Request, name: str) -> Response:
        return _json(200, self._get(name).toxics_json())

    async def toxic_create(self, request: Request, name: str) -> Response:
        proxy = self._get(name)
        data = _object(request.body, "toxics.ToxicWrapper")
        return _json(200, proxy.add_toxic(data).to_json())

    async def toxic_show(self, request: Request, name: str, toxic_name: str) -> Response:
        toxic = self._get(name).find_toxic(toxic_name)
        if toxic is None:
            raise TOXIC_NOT_FOUND
        return _json(200, toxic.to_json())

    async def toxic_update(self, request: Request, name: str, toxic_name: str) -> Response:
        proxy = self._get(name)
        toxic = proxy.find_toxic(toxic_name)
        if toxic is None:  # before the body is read, as Toxiproxy
            raise TOXIC_NOT_FOUND
        data = _object(request.body, _TOXIC_UPDATE_TYPE)
        return _json(200, proxy.update_toxic(toxic, data).to_json())

    async def toxic_delete(self, request: Request, name: str, toxic_name: str) -> Response:
        self._get(name).remove_toxic(toxic_name)
        return Response(204)

    async def expiry_index(self, request: Request) -> Response:
        return _json(200, self.expiries.listing())

    async def expiry_create(self, request: Request) -> Response:
        data = gojson.loads(request.body)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
            raise ApiError("bad expiry: expected an object with a string id", 400)
        after_ms = data.get("after_ms")
        if after_ms is not None and (isinstance(after_ms, bool) or not isinstance(after_ms, int | float) or after_ms < 0):
            raise ApiError("bad expiry: after_ms must be a number >= 0 or null", 400)
        entry = self.expiries.add(data["id"], data.get("actions"), after_ms, data.get("owner"), str(data.get("label", "")))
        return _json(201, entry)

    async def expiry_delete(self, request: Request, entry_id: str) -> Response:
        if not self.expiries.cancel(entry_id):
            raise ApiError("expiry not found", 404)
        return Response(204)
