"""The embedded stack's lifecycle, through the real CLI, with real servers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from cachestorm.core.processes import pid_alive
from tests.own_processes import marker_env, processes_with

CLI = [sys.executable, "-m", "cachestorm"]


def cli(args, cwd, env, timeout=120):
    return subprocess.run(CLI + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_up_status_down_leaves_nothing_behind(tmp_path, cli_env):
    up = cli(["up", "--json"], tmp_path, cli_env)
    assert up.returncode == 0, up.stderr
    endpoints = json.loads(up.stdout)
    state_file = tmp_path / ".cachestorm" / "stack.json"
    state = json.loads(state_file.read_text())
    pids = [s["pid"] for s in state["servers"]]
    data_dirs = [state["base_dir"]]
    assert len(pids) == 3 and all(pid_alive(p) for p in pids)
    try:
        # direct and proxied endpoints really work, with the password only the state file has
        assert state_file.stat().st_mode & 0o777 == 0o600
        password = urlsplit(state["postgres_url"]).password
        assert password and password not in up.stdout
        assert endpoints["postgres"] == state["postgres_url"].replace(password, "***")
        for key in ("redis_url", "redis_proxy_url"):
            assert redis.Redis.from_url(state[key]).ping()
        for key in ("postgres_url", "postgres_proxy_url"):
            with psycopg.connect(state[key]) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        assert endpoints["proxy api"].startswith("http://127.0.0.1:")

        status = cli(["status", "--json"], tmp_path, cli_env)
        assert status.returncode == 0, status.stderr
        assert all(part["healthy"] for part in json.loads(status.stdout).values())

        again = cli(["up"], tmp_path, cli_env)
        assert again.returncode != 0 and "already up" in again.stderr
    finally:
        down = cli(["down"], tmp_path, cli_env)
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(p) for p in pids)
    assert not any(Path(d).exists() for d in data_dirs)
    assert not (tmp_path / ".cachestorm" / "stack.json").exists()
    twice = cli(["down"], tmp_path, cli_env)
    assert twice.returncode == 0 and "nothing to stop" in twice.stdout
    status = cli(["status"], tmp_path, cli_env)
    assert status.returncode == 1 and "no stack" in status.stderr


def test_two_stacks_side_by_side_do_not_collide(stack, tmp_path):
    from cachestorm.stack import StackSettings, start_stack, stop_stack

    second = start_stack(StackSettings())
    try:
        ours = set(stack.endpoints().values())
        theirs = set(second.endpoints().values())
        assert not ours & theirs
        redis.Redis.from_url(stack.redis_url).set("which", "first")
        redis.Redis.from_url(second.redis_url).set("which", "second")
        assert redis.Redis.from_url(stack.redis_proxy_url).get("which") == b"first"
        assert redis.Redis.from_url(second.redis_proxy_url).get("which") == b"second"
    finally:
        stop_stack(second)
    assert not any(pid_alive(s["pid"]) for s in second.servers)


@pytest.mark.parametrize("args, message", [
    (["up", "--redis-url", "not-a-url"], "--redis-url 'not-a-url' is not a valid URL"),
    (["up", "--postgres-url", "mysql://x:1/db"], "--postgres-url"),
    (["up", "--redis-url", "redis://127.0.0.1:1/0"], "does not answer PING"),
])
def test_bad_input_is_one_line_and_leaves_nothing_running(tmp_path, cli_env, args, message):
    env, marker = marker_env(cli_env, "bad-input")
    result = cli(args, tmp_path, env)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / ".cachestorm" / "stack.json").exists()
    assert processes_with(marker) == []


def test_missing_server_binary_is_a_clear_error(server_dir, cli_env, monkeypatch):
    from cachestorm.core.errors import CachestormError
    from cachestorm.stack.servers import start_redis

    with pytest.raises(CachestormError, match="cannot run /nonexistent/redis-server: not found"):
        start_redis(server_dir, binary="/nonexistent/redis-server")


def test_server_that_does_not_come_up_is_reported_with_its_log(server_dir):
    from cachestorm.core.errors import CachestormError
    from cachestorm.stack.servers import start_redis

    tmp_path = server_dir
    fake = tmp_path / "fake-redis"
    fake.write_text("#!/bin/sh\necho 'fatal: pretend config error' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(CachestormError, match="exited with code 3.*pretend config error"):
        start_redis(tmp_path, binary=str(fake))


def test_restart_redis_loses_the_cache_and_keeps_the_urls(tmp_path):
    from cachestorm.stack import StackSettings, restart_redis, start_stack, stop_stack

    state = start_stack(StackSettings())
    try:
        old_pid = next(s["pid"] for s in state.servers if s["kind"] == "redis")
        redis.Redis.from_url(state.redis_proxy_url).set("k", "v")
        restart_redis(state)
        new_pid = next(s["pid"] for s in state.servers if s["kind"] == "redis")
        assert new_pid != old_pid and not pid_alive(old_pid)
        assert redis.Redis.from_url(state.redis_url).get("k") is None
        assert redis.Redis.from_url(state.redis_proxy_url).ping()  # the proxy's upstream still holds
    finally:
        stop_stack(state)
    assert not pid_alive(new_pid)
