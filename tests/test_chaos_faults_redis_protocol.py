"""Redis-protocol faults (redis-command-latency, redis-error-reply, redis-failover) through the
stack's real proxy and Valkey, from Python, from experiment YAML and from `cachestorm chaos apply`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from cachestorm.chaos.experiment import load_experiment
from cachestorm.chaos.faults import make_fault
from cachestorm.chaos.faults.base import SettingError

from cachestorm.core.errors import CachestormError
from cachestorm.stack import context_from_stack, save_state


@pytest.fixture()
def ctx(stack, tmp_path, proxy_client):
    return context_from_stack(stack, ledger_path=str(tmp_path / "ledger.jsonl"))


def proxied(stack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_proxy_url, socket_timeout=5, socket_connect_timeout=5)


def timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_command_latency_slows_sets_of_hot_keys_only(ctx, stack, proxy_client, redis_client):
    client = proxied(stack)
    client.ping()
    fault = make_fault("redis-command-latency", {"latency_ms": 300, "commands": "SET", "keys": "profiles:hot*"})
    fault.bind(ctx, window_s=5)
    try:
        fault.apply()
        [toxic] = proxy_client.toxics("redis")
        assert (toxic["type"], toxic["stream"]) == ("redis_latency", "upstream")
        pending = {e["id"]: e for e in proxy_client.expiries()["pending"]}  # our proxy removes it if we die
        assert pending[fault.state["expiry_id"]]["actions"] == [
            {"do": "remove-toxic", "proxy": "redis", "toxic": toxic["name"]}]
        assert timed(lambda: client.set("profiles:hot1", "v")) >= 0.28
        assert timed(lambda: client.set("profiles:7", "v")) < 0.2
        assert timed(lambda: client.get("profiles:hot1")) < 0.2
    finally:
        fault.revert()
    assert proxy_client.toxics("redis") == []
    assert timed(lambda: client.set("profiles:hot1", "v")) < 0.2


def test_error_reply_refuses_a_share_of_writes(ctx, stack, proxy_client, redis_client):
    client = proxied(stack)
    fault = make_fault("redis-error-reply", {"error": "OOM", "toxicity": 0.5}).bind(ctx, window_s=5)
    failed = 0
    try:
        fault.apply()
        for index in range(200):
            try:
                client.set(f"profiles:{index}", "v")
            except redis.exceptions.OutOfMemoryError:
                failed += 1
        assert client.get("profiles:0") in (b"v", None)  # reads pass
    finally:
        details = fault.revert()
    assert 60 <= failed <= 140, failed
    assert details["commands_faulted"] == failed  # what the journal records
    assert redis_client.dbsize() == 200 - failed


def test_failover_sequence_through_the_stack(ctx, stack, proxy_client, redis_client):
    client = proxied(stack)
    client.set("profiles:1", "v1")
    fault = make_fault("redis-failover", {"refuse_ms": 800}).bind(ctx, window_s=3)
    try:
        fault.apply()
        with pytest.raises(redis.exceptions.ReadOnlyError):
            client.set("profiles:1", "v2")
        assert client.get("profiles:1") == b"v1"
        time.sleep(1.0)
        assert client.set("profiles:1", "v3") is True
    finally:
        fault.revert()
    assert redis_client.get("profiles:1") == b"v3"


def test_failover_longer_than_its_window_is_refused(ctx):
    fault = make_fault("redis-failover", {"refuse_ms": 5000}).bind(ctx, window_s=2)
    with pytest.raises(SettingError, match="longer than the fault's window"):
        fault.check()


@pytest.mark.parametrize(("fault", "settings", "message"), [
    ("redis-error-reply", {"error": "two\nlines"}, "error must be one of OOM, LOADING"),
    ("redis-error-reply", {"commands": ["GET", "MULTI"]}, "MULTI cannot be faulted"),
    ("redis-command-latency", {"keys": ["", "x"]}, "key pattern must not be empty"),
    ("redis-command-latency", {"latency_ms": -5}, "latency_ms must not be negative"),
    ("redis-failover", {"toxicity": 2}, "toxicity must be within 0..1"),
])
def test_bad_settings_fail_before_anything_runs(fault, settings, message):
    with pytest.raises(SettingError, match=message) as failure:
        make_fault(fault, settings)
    assert "\n" not in str(failure.value)


def test_a_server_that_is_not_ours_is_told_it_cannot(ctx, monkeypatch):
    from cachestorm.chaos.toxiproxy import ToxiproxyClient

    monkeypatch.setattr(ToxiproxyClient, "is_ours", lambda self: False)  # a seam: which server answered
    fault = make_fault("redis-error-reply").bind(ctx, window_s=2)
    with pytest.raises(CachestormError, match="needs cachestorm's proxy"):
        fault.prepare()


# the same lookup as the proxy-conf branch's chaos/toxiproxy_server.py (use that once merged)
REAL_TOXIPROXY = Path(os.environ.get("CACHESTORM_TOXIPROXY_SERVER")
                      or Path(__file__).resolve().parents[2] / "shared" / "toxiproxy" / "toxiproxy-server")


@pytest.fixture()
def real_toxiproxy():
    """Shopify's Toxiproxy (the oracle) from ../shared or CACHESTORM_TOXIPROXY_SERVER, on a free port."""
    if not REAL_TOXIPROXY.is_file():
        pytest.skip(f"no real Toxiproxy server: set CACHESTORM_TOXIPROXY_SERVER or put it at {REAL_TOXIPROXY}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([str(REAL_TOXIPROXY), "-host", "127.0.0.1", "-port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{url}/version", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None, "the real Toxiproxy did not start"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("fault", ["redis-command-latency", "redis-error-reply", "redis-failover"])
def test_the_real_toxiproxy_is_told_it_cannot(fault, stack, tmp_path, real_toxiproxy):
    from cachestorm.chaos.toxiproxy import ToxiproxyClient, ToxiproxyError

    with ToxiproxyClient(real_toxiproxy) as client:
        client.create_proxy("redis", "127.0.0.1:0", stack.redis_url.split("//")[1].split("/")[0])
        with pytest.raises(ToxiproxyError) as refused:  # it has no such toxic
            client.add_toxic("redis", make_fault(fault).toxic_type, {}, stream="upstream")
        assert refused.value.status == 400
    ctx = context_from_stack(stack, ledger_path=str(tmp_path / "ledger.jsonl"), proxy_api_url=real_toxiproxy)
    with pytest.raises(CachestormError, match=f"fault '{fault}' needs cachestorm's proxy"):
        make_fault(fault).bind(ctx, window_s=5).prepare()


def test_experiment_yaml_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nmethod:\n"
                    "  - {fault: redis-command-latency, at: 0s, for: 1s, settings: {commands: [SET]}}\n"
                    "  - {fault: redis-error-reply, at: 1s, for: 1s, settings: {commands: [EXEC]}}\n")
    with pytest.raises(CachestormError, match=r"bad.yaml:4: .*EXEC cannot be faulted"):
        load_experiment(str(path))


def test_chaos_apply_from_the_cli(stack, tmp_path, cli_env, redis_client, proxy_client):
    from test_chaos_runner import Traffic

    save_state(stack, tmp_path)
    cli = [sys.executable, "-m", "cachestorm", "chaos", "apply"]
    with Traffic(stack):  # each fault must have something to act on, or it fails (touched nothing)
        done = subprocess.run([*cli, "redis-error-reply", "--set", "error=LOADING", "--set", "keys=profiles:*",
                               "--for", "0.5s"], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 0, done
    assert "end of window" in done.stdout and proxy_client.toxics("redis") == []
    bad = subprocess.run([*cli, "redis-error-reply", "--set", "commands=DISCARD", "--for", "1s"], cwd=tmp_path,
                         env=cli_env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "DISCARD cannot be faulted" in bad.stderr, bad
    experiment = tmp_path / "protocol.yaml"
    experiment.write_text("name: protocol\nmethod:\n"
                          "  - {fault: redis-command-latency, at: 0s, for: 0.4s, settings: {commands: [SET], keys: ['hot:*']}}\n"
                          "  - {fault: redis-error-reply, at: 0.1s, for: 0.4s, settings: {error: BUSY, toxicity: 0.5}}\n"
                          "  - {fault: redis-failover, at: 0.2s, for: 0.5s, settings: {refuse_ms: 200}}\n")
    with Traffic(stack):
        ran = subprocess.run([sys.executable, "-m", "cachestorm", "chaos", "run", str(experiment), "--run-dir",
                              str(tmp_path / "run")], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                             timeout=60)
    assert ran.returncode == 0, ran
    assert proxy_client.toxics("redis") == []
