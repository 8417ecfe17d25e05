"""The proxy's own reverts (chaos/proxy/expiry.py): checked when registered, run at the window's end
or when the owner dies, passwords never listed; against a real Toxiproxy, faults say they cannot."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from cachestorm.chaos.context import ChaosContext, TargetHandle
from cachestorm.chaos.faults import make_fault
from cachestorm.chaos.faults.process_signals import state_letter
from cachestorm.chaos.proxy import EXPIRIES_PATH
from cachestorm.chaos.self_expiry import unguarded_warning, who_reverts

from cachestorm.stack import context_from_stack

# the real server beside the repository (../shared) or where CACHESTORM_TOXIPROXY_SERVER points
REAL_TOXIPROXY = Path(os.environ.get("CACHESTORM_TOXIPROXY_SERVER") or
                      Path(__file__).resolve().parents[2] / "shared" / "toxiproxy" / "toxiproxy-server")


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture()
def api(proxy_process):
    with httpx.Client(base_url=proxy_process.api_url, timeout=10) as client:
        yield client


@pytest.mark.parametrize(("action", "error"), [
    ({"do": "shell", "command": "rm -rf /"}, "unknown action 'shell'"),
    ({"do": "redis", "address": "127.0.0.1:6379", "commands": [["FLUSHALL", "SYNC"]]}, "FLUSHALL SYNC is not allowed"),
    ({"do": "redis", "address": "192.0.2.1:6379", "commands": [["CONFIG", "SET", "a", "b"]]}, "must be a loopback"),
    ({"do": "redis", "address": "127.0.0.1:6379", "commands": [["CONFIG", "SET", "dir", "/root/.ssh"]]},
     "may only set one of maxmemory"),
    ({"do": "signal", "pid": 1, "started": "1", "signal": "SIGKILL"}, "SIGCONT (the only one allowed)"),
    ({"do": "enable-proxy"}, "enable-proxy needs proxy"),
])
def test_a_bad_revert_is_refused_when_registered(api, action, error):
    answer = api.post(EXPIRIES_PATH, json={"id": "x", "after_ms": 1000, "actions": [action]})
    assert answer.status_code == 400 and error in answer.json()["error"], answer.text
    assert api.get(EXPIRIES_PATH).json()["pending"] == []


def test_an_owner_the_proxy_cannot_see_is_refused(api):
    entry = {"id": "o", "owner": {"pid": os.getpid(), "started": "0"}, "actions": [{"do": "enable-proxy",
                                                                                     "proxy": "redis"}]}
    answer = api.post(EXPIRIES_PATH, json=entry)   # a dead or foreign owner would fire at once
    assert answer.status_code == 409 and "not visible" in answer.json()["error"]


def test_passwords_are_never_listed_and_delete_cancels(api):
    action = {"do": "redis", "address": "127.0.0.1:1", "auth": [["cachestorm-admin", "s3cret"], None],
              "commands": [["CONFIG", "SET", "maxmemory", "0"]]}
    created = api.post(EXPIRIES_PATH, json={"id": "e1", "after_ms": 60_000, "actions": [action]})
    assert created.status_code == 201 and "s3cret" not in created.text
    assert "s3cret" not in api.get(EXPIRIES_PATH).text
    assert api.delete(f"{EXPIRIES_PATH}/e1").status_code == 204
    assert api.delete(f"{EXPIRIES_PATH}/e1").status_code == 404
    assert api.get(EXPIRIES_PATH).json()["pending"] == []


def test_a_paused_target_is_resumed_by_the_proxy(stack, tmp_path, proxy_client):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ctx = ChaosContext(targets=[TargetHandle("dummy", child.pid, "http://127.0.0.1:1")],
                           proxy_api_url=stack.proxy_api_url, ledger_path=tmp_path / "l")
        fault = make_fault("target-pause").bind(ctx, window_s=0.2)
        fault.apply()   # and never reverted: the controller "died"
        assert wait_for(lambda: state_letter(child.pid) == "T", 5)
        assert wait_for(lambda: state_letter(child.pid) in ("S", "R"), 0.7 + 5)
    finally:
        child.kill()
        child.wait()


def test_a_fault_without_a_window_is_reverted_when_its_controller_dies(stack, redis_client, proxy_client):
    policy_before = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    controller = textwrap.dedent(f"""
        import sys, time
        from cachestorm.chaos.context import ChaosContext
        from cachestorm.chaos.faults import make_fault
        ctx = ChaosContext(redis_url={stack.redis_url!r}, proxy_api_url={stack.proxy_api_url!r})
        fault = make_fault("lfu-tracking").bind(ctx, window_s=None)
        fault.apply()
        print(fault.self_expiry, flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    process = subprocess.Popen([sys.executable, "-c", controller], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("the proxy at") and "when this process exits" in line, line
        assert "lfu" in redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    finally:
        process.kill()
        process.wait()
    assert wait_for(lambda: redis_client.config_get("maxmemory-policy")["maxmemory-policy"] == policy_before, 8)


@pytest.fixture(scope="module")
def real_toxiproxy():
    from cachestorm.core.processes import free_port

    if not REAL_TOXIPROXY.exists():
        pytest.skip(f"no real Toxiproxy at {REAL_TOXIPROXY}")
    port = free_port()
    server = subprocess.Popen([str(REAL_TOXIPROXY), "-host", "127.0.0.1", "-port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/version", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_for(up, 15), "the real Toxiproxy did not start"
        yield url
    finally:
        server.terminate()
        server.wait(10)


def test_against_a_real_toxiproxy_faults_say_they_cannot_self_expire(stack, tmp_path, redis_client, real_toxiproxy):
    ctx = context_from_stack(stack, proxy_api_url=real_toxiproxy, ledger_path=str(tmp_path / "l"))
    fault = make_fault("redis-oom").bind(ctx, window_s=5)
    assert "real Toxiproxy" in unguarded_warning(real_toxiproxy, [fault])
    try:
        fault.apply()
        assert fault.self_expiry.startswith("none: ") and "real Toxiproxy" in fault.self_expiry
    finally:
        fault.revert()
    entry = {"state": fault.state, "context": ctx.plain()}
    from cachestorm.chaos.self_expiry import listings

    assert who_reverts(entry, listings([real_toxiproxy])).startswith("nobody: the proxy at")
    assert unguarded_warning(stack.proxy_api_url, [fault]) is None   # ours: no warning
    assert "cannot expire by itself" in unguarded_warning(stack.proxy_api_url, [make_fault("target-kill")])


def test_every_lasting_fault_can_expire_by_itself_or_says_it_cannot():
    """A new fault that forgets `expiry_actions()` would outlive a killed controller silently."""
    from cachestorm.chaos.faults import FAULTS, fault_class

    cannot = {name for name in FAULTS if not make_fault(name).can_self_expire()}
    assert cannot == {"target-kill"}   # its revert is a restart through the conductor's callback
    assert all(fault_class(name).one_shot or make_fault(name).can_self_expire() for name in set(FAULTS) - cannot)


@pytest.mark.parametrize("redis_url", ["redis://10.1.2.3:6379/0", "unix:///run/valkey.sock", "rediss://127.0.0.1:1/0"])
def test_a_redis_the_proxy_may_not_reach_means_no_self_expiry_not_a_failed_apply(redis_url, proxy_process):
    fault = make_fault("redis-oom").bind(ChaosContext(redis_url=redis_url, proxy_api_url=proxy_process.api_url), 3)
    fault.state = {"maxmemory": "0", "maxmemory-policy": "noeviction", "expiry_id": "r"}
    assert fault._arm_expiry().startswith("none: the proxy's reverts reach only a loopback Redis over TCP")


def test_apply_against_a_real_toxiproxy_warns_before_the_fault(stack, tmp_path, cli_env, redis_client, real_toxiproxy):
    done = subprocess.run([sys.executable, "-m", "cachestorm", "chaos", "apply", "redis-oom", "--for", "0.2s",
                           "--redis-url", stack.redis_url, "--proxy-api-url", real_toxiproxy],
                          cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done
    out = " ".join(done.stdout.split())
    assert out.startswith(f"warning: {real_toxiproxy} is a real Toxiproxy"), out[:300]
    assert "redis-oom stay(s) active until `cachestorm chaos heal`" in out
