"""Benchmark: cache-hit GETs/s of a reference target vs a bare Starlette endpoint doing one Redis GET.

Both run as uvicorn processes with the same settings (uvloop, httptools, log level warning) against
one private Valkey; the target is profiles + cache-aside with every key warm, so each request is one
Redis GET plus the target's own work (decode, metrics, JSON). Rounds alternate target/bare so drift
hits both. Load comes from `wrk` (Debian package `wrk`, one thread) in its own process; without wrk
a raw-socket asyncio keep-alive client in a subprocess is used instead.

    python -m cachestorm.bench.target            # or: cachestorm bench target
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cachestorm.core.domains import DOMAINS

SPEC = DOMAINS["profiles"]
KEYS = 100
ROUNDS_PER_SIDE = 3
WRK_SCRIPT = f"""
request = function()
  return wrk.format("GET", "{SPEC.path('')}" .. math.random(1, {KEYS}))
end
"""


def bare_app(redis_url: str):
    """The floor: a Starlette endpoint that does one GET on a shared client and returns the bytes."""
    import contextlib

    import redis.asyncio as aioredis
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    state: dict = {}
    prefix = SPEC.key("")  # the target's own keys: the bare server reads what the target warmed

    async def get(request):
        raw = await state["redis"].get(prefix + request.path_params["id"])
        return Response(raw, 200 if raw is not None else 404, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["redis"] = aioredis.Redis.from_url(redis_url)
        yield
        await state["redis"].aclose()

    return Starlette(routes=[Route(SPEC.path("{id}"), get)], lifespan=lifespan)


def serve_bare(port: int, redis_url: str) -> None:
    import uvicorn

    uvicorn.run(bare_app(redis_url), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)


def main(seconds: int = 10, connections: int = 10) -> dict:
    import httpx

    from cachestorm.core.processes import free_port
    from cachestorm.stack.servers import start_postgres, start_redis
    from cachestorm.targets.settings import TargetSettings
    from cachestorm.targets.testing import target_process

    base = tempfile.mkdtemp(prefix="cachestorm-bench-target-")
    os.chmod(base, 0o755)
    servers, processes = [], []
    try:
        redis_server = start_redis(base)
        servers.append(redis_server)
        pg = start_postgres(base)
        servers.append(pg)
        settings = TargetSettings(domain=SPEC.name, strategy="cache-aside", redis_url=redis_server.url,
                                  postgres_url=pg.url, rows=KEYS, ttl=3600, recompute_ms=0)
        target = target_process(settings, Path(base) / "target.log").launch()
        processes.append(target)
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, "-m", "cachestorm.bench.target", "--serve-bare", str(bare_port),
                                 redis_server.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target.wait_ready()
        bare_url = f"http://127.0.0.1:{bare_port}"
        with httpx.Client() as client:
            for key_id in range(1, KEYS + 1):  # warm every key
                client.get(target.base_url + SPEC.path(key_id))
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get(bare_url + SPEC.path(1)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or bare.poll() is not None:
                    raise RuntimeError("the bare endpoint did not start")
                time.sleep(0.02)
        generator = "wrk" if shutil.which("wrk") else "asyncio raw-socket client"
        print(f"load: {generator}, {connections} connections, {ROUNDS_PER_SIDE} alternating rounds of {seconds}s each")
        totals = {"target": [0, 0.0], "bare": [0, 0.0]}
        paired = []  # per round: target/bare, measured back to back (robust to a shared, drifting machine)
        for round_no in range(ROUNDS_PER_SIDE):
            rate = {}
            for name, url in (("target", target.base_url), ("bare", bare_url)):
                requests, elapsed = load(url, seconds, connections)
                totals[name][0] += requests
                totals[name][1] += elapsed
                rate[name] = requests / elapsed
                print(f"  round {round_no + 1} {name:6s} {rate[name]:8.0f} req/s")
            paired.append(rate["target"] / rate["bare"])
        rates = {name: n / t for name, (n, t) in totals.items()}
        ratio = rates["target"] / rates["bare"]
        median = sorted(paired)[len(paired) // 2]
        print(f"target (profiles, cache-aside, warm): {rates['target']:.0f} req/s")
        print(f"bare Starlette + one Redis GET:      {rates['bare']:.0f} req/s")
        print(f"ratio target/bare: {ratio:.2f} overall, median of paired rounds {median:.2f} (goal >= 0.80)")
        bare.terminate()
        bare.wait(timeout=10)
        return {"target_rps": rates["target"], "bare_rps": rates["bare"], "ratio": ratio, "paired_median": median}
    finally:
        for process in processes:
            process.stop()
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def load(url: str, seconds: int, connections: int) -> tuple[int, float]:
    """(requests completed, seconds) of one round, from a separate process."""
    if shutil.which("wrk"):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(WRK_SCRIPT)
        try:
            out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url],
                                 capture_output=True, text=True, timeout=seconds + 30).stdout
        finally:
            Path(script.name).unlink(missing_ok=True)
        requests = int(re.search(r"(\d+) requests in ([\d.]+)(m?s)", out).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if non2xx:
            raise RuntimeError(f"{url}: {non2xx.group(1)} non-2xx responses during the benchmark")
        return requests, float(seconds)
    out = subprocess.run([sys.executable, "-m", "cachestorm.bench.target", "--client", url, str(seconds),
                          str(connections)], capture_output=True, text=True, timeout=seconds + 30).stdout
    result = json.loads(out)
    return result["requests"], result["seconds"]


async def raw_client(url: str, seconds: float, connections: int) -> dict:
    """Keep-alive HTTP/1.1 GETs on raw sockets: far cheaper per request than an HTTP library."""
    import random

    host, port = url.split("//")[1].split(":")
    count = 0
    stop_at = time.monotonic() + seconds

    async def worker():
        nonlocal count
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.monotonic() < stop_at:
            writer.write(f"GET {SPEC.path(random.randint(1, KEYS))} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
            await reader.readexactly(length)
            count += 1
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return {"requests": count, "seconds": time.monotonic() - started}


if __name__ == "__main__":
    if sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "--client":
        import uvloop

        print(json.dumps(uvloop.run(raw_client(sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))))
