"""A tiny, fast stand-in for the target services (design.md "Target HTTP API"), for tests and benches.

Raw asyncio HTTP/1.1 with keep-alive (uvloop when installed) so the load generator, not the
server, is the bottleneck. In-memory versions; ids 1..--keys exist from the start (version 1).
Not a cache: X-Cache says "hit" for a key read before, "miss" the first time, "negative" for 404.

    python -m locustfiles.stub_server --port 8089 [--keys 10000] [--delay-ms 0] [--error-share 0]

``--error-share F`` answers a fraction F of requests 503 {"error": "db_unavailable"} (retry tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re

from cachestorm.core.domains import DOMAINS

DOMAIN_OF_RESOURCE = {spec.resource: spec.name for spec in DOMAINS.values()}
ROUTE = re.compile(rb"^/(" + "|".join(map(re.escape, DOMAIN_OF_RESOURCE)).encode() + rb")/(\d+)(?:/(incr|\d+|\w+))?$")


class Store:
    def __init__(self, keys: int):
        self.keys = keys
        self.versions: dict[tuple, int] = {}
        self.values: dict[tuple, object] = {}
        self.seen: set[tuple] = set()
        self.deleted: set[tuple] = set()

    def exists(self, key) -> bool:
        return key not in self.deleted and (key in self.versions or int(key[1]) <= self.keys)

    def handle(self, method: bytes, path: bytes, body: bytes, headers: dict) -> tuple[int, dict, dict]:
        if path == b"/healthz":
            return 200, {"ok": True}, {}
        if path == b"/counters/flush" and method == b"POST":
            return 200, {"flushed": 0, "pending": 0}, {}
        if path == b"/counters/pending":
            return 200, {"pending": 0}, {}
        if path == b"/metrics":
            return 200, {}, {}
        match = ROUTE.match(path.split(b"?", 1)[0])
        if not match:
            return 404, {"error": "no_route"}, {}
        domain, ident, extra = DOMAIN_OF_RESOURCE[match.group(1).decode()], match.group(2).decode(), match.group(3)
        key = (domain, ident, extra.decode() if extra and domain == "permissions" else "")
        if method == b"GET":
            if not self.exists(key):
                return 404, {"error": "not_found"}, {"X-Cache": "negative", "X-Version": "0"}
            version = self.versions.get(key, 1)
            cache = "hit" if key in self.seen else "miss"
            self.seen.add(key)
            if domain == "permissions":
                data = {"granted": bool(self.values.get(key, False)), "version": version}
            elif domain == "counters":
                data = {"id": int(ident), "value": self.values.get(key, 0), "version": version}
            else:
                data = {"id": int(ident), "data": self.values.get(key, {}), "version": version}
            return 200, data, {"X-Cache": cache, "X-Version": str(version)}
        if method in (b"PUT", b"POST"):
            try:
                payload = json.loads(body or b"{}")
            except ValueError:
                return 400, {"error": "bad_json"}, {}
            self.deleted.discard(key)
            version = self.versions.get(key, 1 if self.exists(key) else 0) + 1
            self.versions[key] = version
            if extra == b"incr":
                key_value = (domain, ident, "")
                self.values[key_value] = self.values.get(key_value, 0) + int(payload.get("by", 1))
                self.versions[key_value] = version
            elif domain == "permissions":
                self.values[key] = bool(payload.get("granted"))
            else:
                self.values[key] = payload.get("data", {})
            return 200, {"version": version}, {"X-Version": str(version)}
        if method == b"DELETE":
            if not self.exists(key):
                return 404, {"error": "not_found"}, {"X-Version": "0"}
            self.deleted.add(key)
            version = self.versions.get(key, 1) + 1
            self.versions[key] = version
            return 200, {"version": version}, {"X-Version": str(version)}
        return 405, {"error": "method"}, {}


REASONS = {503: b"Service Unavailable", 200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}


class HttpProtocol(asyncio.Protocol):
    def __init__(self, store: Store, delay: float, error_share: float = 0.0):
        self.store, self.delay, self.buffer = store, delay, b""
        self.error_share = error_share

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].split(b"\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path, _ = head[0].split(b" ", 2)
            if self.error_share and path != b"/healthz" and random.random() < self.error_share:
                status, data, extra = 503, {"error": "db_unavailable"}, {}
            else:
                status, data, extra = self.store.handle(method, path, body, headers)
            payload = json.dumps(data).encode()
            lines = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"X")), b"Content-Type: application/json",
                     b"Content-Length: %d" % len(payload)]
            lines += [f"{k}: {v}".encode() for k, v in extra.items()]
            response = b"\r\n".join(lines) + b"\r\n\r\n" + payload
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self._write, response)
            else:
                self.transport.write(response)

    def _write(self, response):
        if not self.transport.is_closing():
            self.transport.write(response)


async def serve(port: int, keys: int, delay: float, error_share: float = 0.0):
    store = Store(keys)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: HttpProtocol(store, delay, error_share), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keys", type=int, default=10000)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--error-share", type=float, default=0.0)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.keys, args.delay_ms / 1000.0, args.error_share))


if __name__ == "__main__":
    main()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StubProcess:
    """Run the stub server as a subprocess on a free port; ``url``; ``stop()``; a context manager."""

    def __init__(self, *args: str, python: str | None = None, deadline_s: float = 10.0):
        import http.client
        import subprocess
        import sys
        import time

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [python or sys.executable, "-m", "cachestorm.traffic.stub_server", "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + deadline_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"stub server exited: {self.process.stderr.read().decode()[-500:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    connection.close()
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("stub server did not answer /healthz in time") from None
                time.sleep(0.02)  # poll interval while waiting for the port, bounded by the deadline

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self):
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused server must be able to die
            self.process.terminate()
            try:
                self.process.wait(5)
            except Exception:  # noqa: BLE001
                self.process.kill()
                self.process.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
