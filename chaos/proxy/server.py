"""Run the proxy's API server (and so its proxies) on one uvloop event loop, in the foreground."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
from pathlib import Path

from cachestorm.chaos.proxy.api import ApiApp
from cachestorm.chaos.proxy.busy_poll import BUSY_POLL
from cachestorm.chaos.proxy.guard import AddressGuard
from cachestorm.chaos.proxy.http import MAX_REQUEST_LINE, Request, serve_connection

from cachestorm.core.errors import CachestormError
from cachestorm.core.urls import is_loopback


class ProxyServer:
    """A started API server; `api_url` is its real address (port 0 resolved)."""

    def __init__(self, app: ApiApp, server: asyncio.AbstractServer):
        self.app = app
        self.server = server
        host, port = server.sockets[0].getsockname()[:2]
        self.api_url = f"http://{host}:{port}"

    async def close(self) -> None:
        self.server.close()
        self.app.close()
        await self.server.wait_closed()


def load_config(path: str | os.PathLike) -> bytes:
    """A populate file: a JSON list of {name, listen, upstream[, enabled]}."""
    try:
        raw = Path(path).read_bytes()
        data = json.loads(raw)
    except OSError as exc:
        raise CachestormError(f"cannot read proxy config {path}: {exc.strerror}; pass an existing JSON file") from None
    except ValueError as exc:
        raise CachestormError(f"proxy config {path} is not JSON ({exc}); it must be a list of proxies") from None
    if not isinstance(data, list):
        raise CachestormError(f"proxy config {path} must be a JSON list of {{name, listen, upstream}} objects")
    return raw


async def start(
    host: str = "127.0.0.1", port: int = 8474, config: bytes | None = None, busy_poll_us: int = 0,
    guard: AddressGuard | None = None,
) -> ProxyServer:
    """`guard`: what the API may open (default: loopback listeners, no Unix upstreams)."""
    if not 0 <= port <= 65535:  # asyncio would silently wrap 99999 to another port
        raise CachestormError(f"--port {port} is not a TCP port; choose 0 (any free port) to 65535")
    guard = guard or AddressGuard()
    if not guard.allow_remote and not is_loopback(host):
        raise CachestormError(f"--host {host} is not a loopback address, and the proxy API has no authentication; "
                              "pass --allow-remote if that is what you want")
    loop = asyncio.get_running_loop()
    BUSY_POLL.configure(loop, busy_poll_us / 1_000_000)
    app = ApiApp(loop, guard)
    if config is not None:
        answer = await app(Request("POST", "/populate", {}, config))
        if answer.status != 201:
            app.close()
            raise CachestormError(f"proxy config rejected: {json.loads(answer.body)['error']}")
    try:
        server = await asyncio.start_server(
            lambda r, w: serve_connection(r, w, app), host, port, reuse_address=True, limit=MAX_REQUEST_LINE
        )
    except OSError as exc:
        app.close()
        fix = "choose another --port" if exc.errno == errno.EADDRINUSE else "choose a local --host such as 127.0.0.1"
        raise CachestormError(f"cannot listen on {host}:{port} for the proxy API ({exc.strerror}); {fix}") from None
    return ProxyServer(app, server)


def write_ready_file(path: str | os.PathLike, api_url: str) -> None:
    """Write {"api_url", "pid"} atomically, so a parent polling for the file never reads half of it."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"api_url": api_url, "pid": os.getpid()}))
    os.replace(tmp, target)


def run(
    host: str = "127.0.0.1",
    port: int = 8474,
    config_path: str | None = None,
    ready_file: str | None = None,
    on_ready=None,
    busy_poll_us: int = 0,
    guard: AddressGuard | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; then close every listener and connection."""
    import uvloop

    config = load_config(config_path) if config_path else None

    async def main() -> None:
        server = await start(host, port, config, busy_poll_us, guard)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (ValueError, RuntimeError):  # not the main thread (embedded in tests): no signals
                break
        if ready_file:
            write_ready_file(ready_file, server.api_url)
        if on_ready is not None:
            on_ready(server)
        try:
            await stop.wait()
        finally:
            await server.close()

    uvloop.run(main())
