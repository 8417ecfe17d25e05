"""Helpers for tests and benchmarks: a target in-process (ASGI, no sockets) or as a real subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
from cachestorm.targets.protections.base import Protection
from cachestorm.targets.settings import URL_ENV, TargetSettings


class BrokenProtection(Protection):
    """A protection that protects nothing: what CACHESTORM_TEST_BROKEN_PROTECTIONS swaps in (CI's gate check)."""

    name = "broken"

REPO = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def in_process(settings: TargetSettings, reset: bool = False):
    """(client, service): the app's lifespan runs; requests go straight into the ASGI app.
    reset: the domain's table is re-seeded and the Redis database flushed first."""
    from cachestorm.targets.app import build_app, prepare_schema

    prepare_schema(settings, reset=reset)
    if reset:
        flush_redis(settings.redis_url)
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://target", timeout=30) as client:
            yield client, app.state.service


class TargetProcess:
    """`python -m targets ...` as a child process on a free port."""

    def __init__(self, settings: TargetSettings, extra_env: dict | None = None):
        from cachestorm.core.processes import free_port

        self.settings = replace(settings, port=settings.port if settings.port != 8000 else free_port())
        self.url = f"http://127.0.0.1:{self.settings.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="target-", suffix=".log", delete=False)  # noqa: SIM115
        env = {**os.environ, **url_env(self.settings), **(extra_env or {})}
        self.process = subprocess.Popen([sys.executable, "-m", "cachestorm.targets", *self.settings.argv()],
                                        stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def wait_ready(self, timeout_s: float = 30.0) -> TargetProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"target exited {self.process.returncode}: {self.output()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"target not ready in {timeout_s}s: {self.output()[-2000:]}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def kill(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> TargetProcess:
        return self.wait_ready()

    def __exit__(self, *exc) -> None:
        self.kill()
        Path(self.log.name).unlink(missing_ok=True)


def flush_redis(url: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushdb()


def url_env(s: TargetSettings) -> dict[str, str]:
    """The URLs (passwords and all) as environment variables for `python -m targets`."""
    return {variable: getattr(s, name) for name, variable in URL_ENV.items()}


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples in a /metrics page whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
