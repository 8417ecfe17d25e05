"""`cachestorm chaos` as a subprocess: rollback on Ctrl-C, heal after SIGKILL, status, list, run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
from cachestorm.chaos.ledger import Ledger, refuse_active_faults

from cachestorm.stack import save_state


@pytest.fixture()
def workdir(stack, tmp_path, redis_client, proxy_client):
    save_state(stack, tmp_path)   # what `cachestorm up` leaves behind
    return tmp_path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cachestorm", *args]


def wait_for(condition, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the CLI exited early: {process.communicate()}")
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def clean(redis_client, proxy_client, config_before, acl_before) -> None:
    for name, proxy in proxy_client.proxies().items():
        assert proxy["enabled"] and proxy["toxics"] == [], name
    config = redis_client.config_get("maxmemory*")
    assert (config["maxmemory"], config["maxmemory-policy"]) == config_before
    assert redis_client.acl_list() == acl_before


FAULTS = {  # fault -> (extra CLI args, "is it active?")
    "redis-latency": (["--set", "latency_ms=30"], lambda r, p: bool(p.toxics("redis"))),
    "redis-oom": ([], lambda r, p: r.config_get("maxmemory")["maxmemory"] != "0"),
    "redis-acl-readonly": ([], lambda r, p: any("-@write" in line for line in r.acl_list())),
    "redis-down": ([], lambda r, p: not p.get_proxy("redis")["enabled"]),
    "lfu-tracking": ([], lambda r, p: "lfu" in r.config_get("maxmemory-policy")["maxmemory-policy"]),
}


@pytest.mark.parametrize("fault", ["redis-latency", "redis-oom"])
def test_ctrl_c_mid_fault_reverts_it(fault, workdir, cli_env, redis_client, proxy_client):
    config_before = tuple(redis_client.config_get("maxmemory*")[k] for k in ("maxmemory", "maxmemory-policy"))
    acl_before = redis_client.acl_list()
    extra, active = FAULTS[fault]
    process = subprocess.Popen(cli("chaos", "apply", fault, *extra, "--for", "60s"), cwd=workdir, env=cli_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: active(redis_client, proxy_client), process=process)
        assert len(Ledger(workdir / ".cachestorm" / "active-faults.jsonl").active()) == 1
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, (out, err)
    clean(redis_client, proxy_client, config_before, acl_before)
    assert Ledger(workdir / ".cachestorm" / "active-faults.jsonl").active() == []


def _apply_then_sigkill(fault, window, workdir, cli_env, redis_client, proxy_client):
    """`chaos apply FAULT --for WINDOW`, SIGKILLed once the fault is active: (Redis config and ACL
    before, the fault's `active` check)."""
    config_before = tuple(redis_client.config_get("maxmemory*")[k] for k in ("maxmemory", "maxmemory-policy"))
    acl_before = redis_client.acl_list()
    extra, active = FAULTS[fault]
    process = subprocess.Popen(cli("chaos", "apply", fault, *extra, "--for", window), cwd=workdir, env=cli_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: active(redis_client, proxy_client), process=process)
    finally:
        process.kill()
        process.wait()
    return config_before, acl_before, active


@pytest.mark.parametrize("fault", ["redis-acl-readonly", "redis-down"])
def test_heal_after_sigkill_of_the_controller(fault, workdir, cli_env, redis_client, proxy_client, stack):
    config_before, acl_before, active = _apply_then_sigkill(fault, "60s", workdir, cli_env, redis_client,
                                                            proxy_client)
    assert active(redis_client, proxy_client)   # the fault outlived its controller
    status = subprocess.run(cli("chaos", "status", "--json"), cwd=workdir, env=cli_env, capture_output=True,
                            text=True, timeout=30)
    assert [e["fault"] for e in json.loads(status.stdout)["active_faults"]] == [fault]
    assert urlsplit(stack.postgres_url).password not in status.stdout  # the ledger has it; status shows ***
    if fault == "redis-acl-readonly":  # its temporary admin password: in the 0600 ledger, never shown
        [entry] = Ledger(workdir / ".cachestorm" / "active-faults.jsonl").active()
        secret = entry["state"]["admin_password"]
        assert len(secret) >= 16 and secret not in status.stdout, status.stdout
        assert json.loads(status.stdout)["active_faults"][0]["state"]["admin_password"] == "***"
        for command in (["status", "--json"], ["chaos", "status"]):  # the stack's health, the table
            shown = subprocess.run(cli(*command), cwd=workdir, env=cli_env, capture_output=True, text=True,
                                   timeout=30)
            assert shown.returncode == 0, shown
            for password in (secret, urlsplit(stack.postgres_url).password):
                assert password not in shown.stdout + shown.stderr, command
    healed = subprocess.run(cli("chaos", "heal"), cwd=workdir, env=cli_env, capture_output=True, text=True,
                            timeout=30)
    assert healed.returncode == 0, healed
    assert "reverted" in healed.stdout
    clean(redis_client, proxy_client, config_before, acl_before)
    again = subprocess.run(cli("chaos", "heal"), cwd=workdir, env=cli_env, capture_output=True, text=True,
                           timeout=30)
    assert "nothing to heal" in again.stdout


def test_apply_runs_out_its_window_and_run_reports_the_hypothesis(workdir, cli_env, redis_client, proxy_client,
                                                                  stack):
    from test_chaos_runner import Traffic

    with Traffic(stack):  # a toxic on a path without traffic touches nothing (see below)
        done = subprocess.run(cli("chaos", "apply", "redis-latency", "--set", "latency_ms=10", "--for", "0.5s"),
                              cwd=workdir, env=cli_env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done
    assert "end of window" in done.stdout and proxy_client.toxics("redis") == []
    bad = subprocess.run(cli("chaos", "apply", "redis-latency", "--set", "latency=10", "--for", "1s"),
                         cwd=workdir, env=cli_env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown setting 'latency'")
    experiment = workdir / "short.yaml"
    experiment.write_text("name: short\nmethod:\n  - {fault: hot-key-expiry, at: 0.2s}\n")
    redis_client.mset({f"profiles:{i}": "v" for i in range(1, 21)})
    ran = subprocess.run(cli("chaos", "run", str(experiment), "--run-dir", str(workdir / "run")),
                         cwd=workdir, env=cli_env, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0, ran
    assert "hypothesis: not_checked" in ran.stdout and redis_client.dbsize() == 10
    listed = subprocess.run(cli("chaos", "list"), cwd=workdir, env=cli_env, capture_output=True, text=True,
                            timeout=30)
    assert "hot-key-expiry" in listed.stdout and "invalidation-lost" in listed.stdout


@pytest.mark.parametrize("step, says", [
    # the proxy refuses it (no such proxy: 404 at prepare)
    ("{fault: redis-latency, at: 0.2s, for: 0.5s, settings: {proxy: nope}}", "redis-latency at 0.2s: "),
    # nothing to act on: no traffic through the proxy, no key of the domain
    ("{fault: redis-latency, at: 0.2s, for: 0.5s}", "redis-latency at 0.2 s reached 0 connections"),
    ("{fault: hot-key-expiry, at: 0.2s, settings: {domain: catalog}}",
     "hot-key-expiry at 0.2 s expired 0 keys: domain catalog has no keys on a profiles run"),
])
def test_chaos_run_exits_1_when_a_fault_fails(step, says, workdir, cli_env, redis_client, proxy_client):
    redis_client.flushdb()
    experiment = workdir / "failing.yaml"
    experiment.write_text(f"name: failing\nmethod:\n  - {step}\n")
    ran = subprocess.run(cli("chaos", "run", str(experiment), "--run-dir", str(workdir / "run")),
                         cwd=workdir, env=cli_env, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 1, ran
    assert says in ran.stdout + ran.stderr
    assert ran.stderr.startswith("error: 1 fault(s) of failing failed") and len(ran.stderr.splitlines()) == 1
    assert proxy_client.toxics("redis") == []


@pytest.mark.parametrize("fault", ["redis-down", "redis-oom", "redis-acl-readonly", "lfu-tracking"])
def test_a_sigkilled_apply_s_fault_expires_by_itself(fault, workdir, cli_env, redis_client, proxy_client):
    config_before, acl_before, active = _apply_then_sigkill(fault, "3s", workdir, cli_env, redis_client,
                                                            proxy_client)
    killed = time.monotonic()
    assert active(redis_client, proxy_client)   # its controller is gone; nothing of ours runs any more
    status = subprocess.run(cli("chaos", "status", "--json"), cwd=workdir, env=cli_env, capture_output=True,
                            text=True, timeout=30)
    [entry] = json.loads(status.stdout)["active_faults"]
    # pending, or already run when this loaded machine took longer than the window to get here
    assert entry["if_controller_dies"].startswith(("the proxy at http://127.0.0.1:", "reverted by the proxy")), entry
    wait_for(lambda: not active(redis_client, proxy_client), timeout=3.5 + 8)   # the window, the grace, slack
    assert time.monotonic() - killed < 3.5 + 8
    clean(redis_client, proxy_client, config_before, acl_before)
    if fault == "redis-oom":   # the next run starts: nothing is active any more, the ledger is closed
        refuse_active_faults(workdir / ".cachestorm" / "active-faults.jsonl")
        assert Ledger(workdir / ".cachestorm" / "active-faults.jsonl").active() == []
    if fault != "redis-acl-readonly":
        return   # the rest once (each CLI call costs seconds here)
    status = subprocess.run(cli("chaos", "status", "--json"), cwd=workdir, env=cli_env, capture_output=True,
                            text=True, timeout=30)
    [entry] = json.loads(status.stdout)["active_faults"]   # still in the ledger: `heal` drops it
    assert entry["if_controller_dies"].startswith("reverted by the proxy at"), entry
    assert entry["if_controller_dies"].endswith("(window ended): ok"), entry
    healed = subprocess.run(cli("chaos", "heal"), cwd=workdir, env=cli_env, capture_output=True, text=True,
                            timeout=30)
    assert healed.returncode == 0, healed
    clean(redis_client, proxy_client, config_before, acl_before)


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"not a ledger\n",
                                     b'{"op": "apply", "id": "a1", "settings": {}}\n'])
def test_heal_on_a_file_that_is_no_ledger_says_so_and_keeps_it(content, workdir, cli_env):
    ledger = workdir / ".cachestorm" / "active-faults.jsonl"
    ledger.parent.mkdir(exist_ok=True)
    ledger.write_bytes(content)
    for command in (["chaos", "heal"], ["chaos", "status"]):
        done = subprocess.run(cli(*command), cwd=workdir, env=cli_env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, done
        assert done.stderr.startswith("error: the fault ledger") and len(done.stderr.splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr + done.stdout
    assert ledger.read_bytes() == content   # nothing lost


def test_heal_finishes_against_a_stack_that_no_longer_exists(workdir, cli_env, server_dir, proxy_client):
    from cachestorm.chaos.context import ChaosContext
    from cachestorm.chaos.faults import make_fault
    from cachestorm.chaos.proxy.process import spawn

    from cachestorm.stack.servers import start_redis

    ledger = Ledger(workdir / ".cachestorm" / "active-faults.jsonl")
    proxy, redis_server = spawn(), start_redis(server_dir)
    try:   # a run's own stack, with faults applied, then killed together with the run
        from cachestorm.chaos.toxiproxy import ToxiproxyClient

        with ToxiproxyClient(proxy.api_url) as client:
            client.create_proxy("redis", "127.0.0.1:0", redis_server.url.split("//")[1].split("/")[0])
        ctx = ChaosContext(redis_url=redis_server.url, proxy_api_url=proxy.api_url, ledger_path=ledger.path)
        for name in ("redis-down", "redis-oom", "redis-latency"):
            fault = make_fault(name).bind(ctx, window_s=60)
            fault.prepare()
            ledger.add(fault, ctx)
            fault.apply()
    finally:
        proxy.popen.kill()
        proxy.popen.wait()
        redis_server.stop()
    assert len(ledger.active()) == 3
    healed = subprocess.run(cli("chaos", "heal"), cwd=workdir, env=cli_env, capture_output=True, text=True,
                            timeout=60)
    assert healed.returncode == 0, healed   # and `workdir` has a live stack (a new `up`) that heal also checks
    assert healed.stdout.count("gone") >= 3, healed.stdout
    assert ledger.active() == []
    again = subprocess.run(cli("chaos", "heal"), cwd=workdir, env=cli_env, capture_output=True, text=True,
                           timeout=30)
    assert again.returncode == 0 and "nothing to heal" in again.stdout, again


def test_run_refuses_to_start_on_top_of_a_leftover_fault(workdir, cli_env, redis_client, stack):
    from cachestorm.chaos.faults import make_fault

    from cachestorm.stack import context_from_stack

    ledger = Ledger(workdir / ".cachestorm" / "active-faults.jsonl")
    ctx = context_from_stack(stack, ledger_path=ledger.path)
    fault = make_fault("redis-acl-readonly").bind(ctx, window_s=60)
    fault.prepare()
    ledger.add(fault, ctx)
    fault.apply()   # what a SIGKILLed run leaves behind
    try:
        ran = subprocess.run(cli("run", "--duration", "2s", "--users", "1", "--out", str(workdir / "runs")),
                             cwd=workdir, env=cli_env, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 2, ran
        assert ran.stderr.startswith("error: 1 fault(s) are still active") and "Traceback" not in ran.stderr, ran
        assert "redis-acl-readonly" in ran.stderr and "`cachestorm chaos heal`" in ran.stderr
        assert len(ran.stderr.splitlines()) == 1 and not (workdir / "runs").exists()
    finally:
        fault.revert()
        ledger.mark_reverted(ledger.active()[0]["id"])


def test_apply_writes_only_to_a_ledger_it_made_or_recognises(workdir, cli_env, proxy_client, stack):
    """`--ledger <some file>` used to append entries (the PostgreSQL password among them) to any file."""
    from test_chaos_runner import Traffic

    notes = workdir / "notes.txt"
    notes.write_bytes(b"my notes\n")
    refused = subprocess.run(cli("chaos", "apply", "redis-latency", "--for", "5s", "--ledger", str(notes)),
                             cwd=workdir, env=cli_env, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2, refused
    assert refused.stderr.startswith("error: the fault ledger") and len(refused.stderr.splitlines()) == 1
    assert "Traceback" not in refused.stderr + refused.stdout
    assert notes.read_bytes() == b"my notes\n" and proxy_client.toxics("redis") == []   # untouched, nothing applied

    for ledger, run_dir in ((workdir / "new" / "faults.jsonl", "run-1"), (workdir / "empty.jsonl", "run-2")):
        if ledger.name == "empty.jsonl":
            ledger.touch(mode=0o644)   # an empty file is one we may take; it becomes private
        seen = {}

        def watch(path=ledger, seen=seen):
            text = path.read_text() if path.exists() else ""
            if '"op": "apply"' in text:
                seen["text"], seen["mode"] = text, path.stat().st_mode & 0o777
            return bool(seen)

        with Traffic(stack):  # a toxic on a path without traffic touches nothing, and fails
            process = subprocess.Popen(cli("chaos", "apply", "redis-latency", "--for", "1s", "--ledger", str(ledger),
                                           "--run-dir", str(workdir / run_dir)),
                                       cwd=workdir, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
            try:
                wait_for(watch, process=process)
            finally:
                out, err = process.communicate(timeout=30)
        assert process.returncode == 0, (out, err)
        assert seen["mode"] == 0o600, oct(seen["mode"])
        assert urlsplit(stack.postgres_url).password not in seen["text"]   # no revert needs it
        assert json.loads(seen["text"].splitlines()[0])["context"]["postgres_url"].startswith("postgresql://postgres:***@")


@pytest.mark.parametrize("command", [("chaos", "apply", "redis-latency", "--run-dir", "a-file"),
                                     ("chaos", "run", "hot-key-expiry", "--run-dir", "a-file"),
                                     ("chaos", "status", "--ledger", "a-folder"),
                                     ("chaos", "heal", "--ledger", "a-folder"),
                                     ("chaos", "apply", "redis-latency", "--ledger", "a-file/ledger.jsonl")])
def test_a_path_of_the_wrong_kind_is_one_line(command, workdir, cli_env, proxy_client):
    (workdir / "a-file").write_text("x\n")
    (workdir / "a-folder").mkdir()
    done = subprocess.run(cli(*command), cwd=workdir, env=cli_env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr + done.stdout
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
    assert proxy_client.toxics("redis") == [] and (workdir / "a-file").read_text() == "x\n"
