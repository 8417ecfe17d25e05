"""Helpers for tests and benchmarks: a target in-process (ASGI, no sockets) or as a real subprocess."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import httpx
from cachestorm.targets.process import TARGET_MODULE, TargetProcess
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


def target_process(settings: TargetSettings, log_path: Path, extra_env: dict | None = None,
                   name: str = "target") -> TargetProcess:
    """A TargetProcess for `settings`, not started; the default port 8000 is swapped for a free one."""
    from cachestorm.core.processes import free_port

    settings = replace(settings, port=settings.port if settings.port != 8000 else free_port())
    return TargetProcess(name, settings.port, [sys.executable, "-m", TARGET_MODULE, *settings.argv()],
                         Path(log_path), {**url_env(settings), **(extra_env or {})})


@contextlib.contextmanager
def running_target(settings: TargetSettings, extra_env: dict | None = None):
    """A started target_process, logging to a temp file; stopped and its log deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="cachestorm-target-") as folder:
        with target_process(settings, Path(folder) / "target.log", extra_env) as target:
            yield target


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
