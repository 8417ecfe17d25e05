"""`python -m targets` as a real process: serving over HTTP, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from cachestorm.targets.settings import TargetSettings
from cachestorm.targets.testing import REPO, running_target


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cachestorm.targets", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)


def test_serves_profiles_over_http(stack, redis_client):
    settings = TargetSettings(domain="profiles", strategy="cache-aside+coalescing", redis_url=stack.redis_url,
                              postgres_url=stack.postgres_url, rows=100, recompute_ms=1, instance_id="t1")
    with running_target(settings) as target:
        first = httpx.get(target.base_url + "/profiles/7")
        second = httpx.get(target.base_url + "/profiles/7")
        assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
        assert second.json()["id"] == 7
        health = httpx.get(target.base_url + "/healthz").json()
        assert health["instance_id"] == "t1" and health["strategy"] == "cache-aside+coalescing"
        assert "cachestorm_cache_results_total" in httpx.get(target.base_url + "/metrics").text


@pytest.mark.parametrize("args, needle", [
    (["--strategy", "bogus"], "unknown strategy 'bogus'"),
    (["--strategy", "cache-aside+bogus"], "unknown protection 'bogus'"),
    (["--domain", "nope"], "--domain 'nope' is unknown"),
    (["--redis-url", "http://x"], "--redis-url"),
    (["--port", "notanumber"], "invalid int value"),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr


def test_unreachable_db_and_busy_port_are_one_line(stack):
    import socket

    from cachestorm.core.processes import free_port

    dead = run_cli("--postgres-url", f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                   "--redis-url", stack.redis_url, "--port", str(free_port()))
    assert dead.returncode == 2 and "PostgreSQL" in dead.stderr and len(dead.stderr.strip().splitlines()) == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = run_cli("--port", str(busy.getsockname()[1]), "--redis-url", stack.redis_url,
                        "--postgres-url", stack.postgres_url)
    assert taken.returncode == 2 and "in use" in taken.stderr and len(taken.stderr.strip().splitlines()) == 1
