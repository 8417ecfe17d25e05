"""Each kind of plug-in is one file in tests/plugins/ plus one registry line, and works for real.

In this process the line is added with monkeypatch; a child process (a target, the proxy, Locust, the
CLI) gets it through CACHESTORM_PLUGINS, as CONTRIBUTING.md describes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cachestorm.chaos.faults import FAULTS
from cachestorm.chaos.proxy.process import spawn as spawn_proxy
from cachestorm.chaos.proxy.toxics import TOXICS
from cachestorm.chaos.toxiproxy import ToxiproxyClient
from cachestorm.reports import render_run
from cachestorm.reports.html import SECTIONS
from cachestorm.reports.synthetic import write_synthetic_run
from cachestorm.targets.protections import PROTECTIONS
from cachestorm.targets.settings import TargetSettings
from cachestorm.targets.strategies import STRATEGIES
from cachestorm.targets.testing import in_process, running_target
from cachestorm.traffic.models.keys import KEY_MODELS
from cachestorm.traffic.recording import read_history
from cachestorm.traffic.stub_server import StubProcess

from cachestorm.core import plugins
from cachestorm.core.plugins import PLUGINS_ENV, PluginError
from cachestorm.stack import save_state
from tests.plugins.requests_section import HEADING
from tests.plugins.ttl_cap import CAP_S
from tests.test_traffic_locust import run_locust

REPO = Path(__file__).resolve().parent.parent

# the one registry line of each test plug-in, as a CACHESTORM_PLUGINS entry (KIND.NAME=module:attribute)
STRATEGY = "strategy.cache-forever=tests.plugins.cache_forever:CacheForever"
PROTECTION = "protection.ttl-cap=tests.plugins.ttl_cap:TtlCap"
FAULT = "fault.redis-marker=tests.plugins.redis_marker:RedisMarker"
TOXIC = "toxic.uppercase=tests.plugins.uppercase:UppercaseToxic"
KEY_MODEL = "key-model.even=tests.plugins.even_keys:EvenKeys"
SECTION = "report-section.requests=tests.plugins.requests_section:requests_section"


def child_env(*entries: str) -> dict[str, str]:
    """What a child needs to see the plug-ins: the entries, and the checkout on its import path."""
    return {PLUGINS_ENV: " ".join(entries), "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def add_line(monkeypatch, registry: dict, entry: str) -> None:
    """The registry line, added in this process."""
    key, _, spec = entry.partition("=")
    monkeypatch.setitem(registry, key.partition(".")[2], spec)


# ---------------------------------------------------------------- one of each kind, for real

def test_a_strategy_plugin_serves_requests_in_a_real_target(stack, redis_client):
    settings = TargetSettings(domain="profiles", strategy="cache-forever", redis_url=stack.redis_url,
                              postgres_url=stack.postgres_url, rows=50, recompute_ms=1, ttl=30)
    with running_target(settings, child_env(STRATEGY)) as target:
        first, second = (httpx.get(f"{target.base_url}/profiles/3", timeout=10) for _ in range(2))
        assert (first.status_code, first.headers["x-cache"], second.headers["x-cache"]) == (200, "miss", "hit")
        assert second.json()["id"] == 3
        assert httpx.get(f"{target.base_url}/healthz").json()["strategy"] == "cache-forever"
    assert redis_client.ttl("profiles:3") == -1  # cached without a TTL: the plug-in's own rule, not cache-aside's


def test_a_protection_plugin_shapes_a_real_fill(monkeypatch, stack, redis_client):
    add_line(monkeypatch, PROTECTIONS, PROTECTION)
    settings = TargetSettings(domain="profiles", strategy="cache-aside+ttl-cap", redis_url=stack.redis_url,
                              postgres_url=stack.postgres_url, rows=50, recompute_ms=0, ttl=30)

    async def scenario():
        async with in_process(settings, reset=True) as (client, _service):
            assert (await client.get("/profiles/4")).headers["x-cache"] == "miss"

    asyncio.run(scenario())
    assert 0 < redis_client.pttl("profiles:4") <= CAP_S * 1000  # the domain's TTL is 30 s; the cap wins


@pytest.fixture()
def workdir(stack, tmp_path, redis_client, proxy_client):
    save_state(stack, tmp_path)  # what `cachestorm up` leaves behind, for `cachestorm chaos`
    return tmp_path


def test_a_fault_plugin_applies_and_reverts_against_the_stack(workdir, redis_client):
    env = {**os.environ, **child_env(FAULT)}
    command = [sys.executable, "-m", "cachestorm", "chaos", "apply", "redis-marker", "--for", "3s"]
    apply = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while redis_client.get("cachestorm:test-marker") != b"on":
            assert apply.poll() is None, apply.communicate()
            assert time.monotonic() < deadline, "the fault never applied"
            time.sleep(0.05)
        out, err = apply.communicate(timeout=30)
    finally:
        if apply.poll() is None:
            apply.kill()
            apply.wait()
    assert apply.returncode == 0, (out, err)
    assert "redis-marker" in out and not redis_client.exists("cachestorm:test-marker")  # reverted


def test_a_toxic_plugin_acts_on_bytes_through_the_real_proxy(echo):
    proxy = spawn_proxy(env=child_env(TOXIC))
    try:
        with ToxiproxyClient(proxy.api_url) as client:
            listen = client.create_proxy("echo", "127.0.0.1:0", f"127.0.0.1:{echo.port}")["listen"]
            client.add_toxic("echo", "uppercase", stream="downstream")
            with socket_to(listen) as sock:
                sock.sendall(b"hello, proxy")
                assert read_exactly(sock, 12) == b"HELLO, PROXY"
            client.remove_toxic("echo", "uppercase_downstream")
            with socket_to(listen) as sock:
                sock.sendall(b"hello again")
                assert read_exactly(sock, 11) == b"hello again"
    finally:
        proxy.stop()


def socket_to(listen: str):
    import socket

    host, _, port = listen.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=5)


def read_exactly(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_a_key_model_plugin_drives_the_traffic_s_key_choice(monkeypatch, tmp_path):
    monkeypatch.setenv(PLUGINS_ENV, KEY_MODEL)  # run_locust hands Locust this process's environment
    with StubProcess("--keys", "200") as stub:
        result = run_locust("profiles", stub.url, "-u", "2", "-r", "2", "-t", "3s", "--run-dir", str(tmp_path),
                            "--keys", "200", "--key-model", "even", "--hot-keys", "0", "--history-sample", "1",
                            "--seed", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    keys = [int(row["key"]) for path in (tmp_path / "histories").glob("*.tsv") for row in read_history(path)]
    assert len(keys) > 50 and all(key % 2 == 0 for key in keys), keys[:20]
    assert len(set(keys)) > 20  # the model's own spread over the even ids, not one key


def test_a_report_section_plugin_appears_in_the_rendered_report(monkeypatch, tmp_path):
    add_line(monkeypatch, SECTIONS, SECTION)
    run_dir = write_synthetic_run(tmp_path / "run")
    render_run(run_dir)
    html = (run_dir / "report.html").read_text()
    assert HEADING in html and html.index("<h2>Consistency</h2>") < html.index(HEADING)  # after the built-ins


# ---------------------------------------------------------------- the loader and CACHESTORM_PLUGINS

@pytest.mark.parametrize("spec, message", [
    ("no-colon", "is not an import string"),
    ("a:b:c", "is not an import string"),
    ("tests.plugins.nowhere:X", "cannot import tests.plugins.nowhere"),
    ("tests.plugins.ttl_cap:Missing", "has no attribute 'Missing'"),
])
def test_a_bad_entry_is_one_plugin_error(spec, message):
    with pytest.raises(PluginError, match=message):
        plugins.load(spec, "strategy")


def test_load_follows_a_dotted_attribute():
    from tests.plugins.even_keys import EvenKeys

    assert plugins.load("tests.plugins.even_keys:EvenKeys.from_options") == EvenKeys.from_options


def test_the_environment_extends_only_its_own_kind_after_the_built_ins(monkeypatch):
    monkeypatch.setenv(PLUGINS_ENV, f"{STRATEGY}, {TOXIC}")
    extended = plugins.registry("strategy", {"no-cache": "x:NoCache"})
    assert list(extended) == ["no-cache", "cache-forever"]
    assert extended["cache-forever"] == "tests.plugins.cache_forever:CacheForever"


@pytest.mark.parametrize("value, message", [
    ("strategy.cache-aside=tests.plugins.cache_forever:CacheForever", "is built in"),
    ("stratgy.x=tests.plugins.cache_forever:CacheForever", "unknown kind 'stratgy'"),
    ("strategy=tests.plugins.cache_forever:CacheForever", "is not KIND.NAME="),
    ("strategy.x=tests.plugins.cache_forever", "is not an import string"),
])
def test_a_bad_environment_entry_is_refused(monkeypatch, value, message):
    monkeypatch.setenv(PLUGINS_ENV, value)
    with pytest.raises(PluginError, match=message):
        plugins.registry("strategy", {"cache-aside": "x:CacheAside"})


BROKEN = "tests.plugins.nowhere:X"  # a registered plug-in whose module is not there


@pytest.mark.parametrize("command, value, message", [
    (["cachestorm", "chaos", "list"], "bogus", "error: CACHESTORM_PLUGINS: 'bogus' is not KIND.NAME="),
    (["cachestorm", "chaos", "list"], f"fault.x={BROKEN}", f"error: fault '{BROKEN}': cannot import"),
    (["cachestorm", "run", "--strategy", "x"], f"strategy.x={BROKEN}", f"error: strategy '{BROKEN}': cannot import"),
    (["cachestorm", "run", "--strategy", "cache-aside+x"], f"protection.x={BROKEN}",
     f"error: protection '{BROKEN}': cannot import"),
    (["cachestorm", "run", "--key-model", "x"], f"key-model.x={BROKEN}", f"error: key model '{BROKEN}': cannot import"),
    (["cachestorm.chaos.proxy", "--port", "0"], f"toxic.x={BROKEN}", f"error: toxic '{BROKEN}': cannot import"),
])
def test_a_broken_plugin_is_one_line_before_anything_starts(cli_env, tmp_path, command, value, message):
    done = subprocess.run([sys.executable, "-m", *command], cwd=tmp_path, env={**cli_env, PLUGINS_ENV: value},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith(message), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # a run refused it up front


@pytest.mark.parametrize("registry, attribute", [
    (STRATEGIES, "name"), (PROTECTIONS, "name"), (FAULTS, "name"), (TOXICS, "type_name"),
])
def test_every_registry_name_is_its_class_s_own(registry, attribute):
    """The registry key and the class's name say the same (the journal and the API show the class's)."""
    for name, spec in registry.items():
        assert getattr(plugins.load(spec), attribute) == name, spec


def test_every_key_model_builds_and_draws_in_range():
    from cachestorm.traffic.models.keys import KeyModelOptions

    options = KeyModelOptions(alpha=0.99, hot_fraction=0.2, hot_op_fraction=0.8)
    for name, spec in KEY_MODELS.items():
        model = plugins.load(spec).from_options(100, options, 1)
        assert all(1 <= model() <= 100 for _ in range(200)), name
