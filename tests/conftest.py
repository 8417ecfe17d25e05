"""Session fixtures: one real embedded stack (Valkey, PostgreSQL, chaos proxy) for the test run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def stack():
    """The whole embedded stack, started once per test session and always stopped."""
    from cachestorm.stack import StackSettings, start_stack, stop_stack

    state = start_stack(StackSettings())
    try:
        yield state
    finally:
        stop_stack(state)


@pytest.fixture()
def redis_client(stack):
    """A direct (unproxied) client, with the database flushed before each test."""
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture()
def pg_conninfo(stack) -> str:
    return stack.postgres_url


@pytest.fixture()
def proxy_client(stack):
    """Toxiproxy client for the stack's proxy; every toxic is removed after the test."""
    from cachestorm.chaos.toxiproxy import ToxiproxyClient

    client = ToxiproxyClient(stack.proxy_api_url)
    try:
        yield client
    finally:
        client.reset()


@pytest.fixture()
def cli_env(tmp_path) -> dict[str, str]:
    """Environment for running the `cachestorm` CLI as a subprocess from a scratch folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="session")
def server_root():
    """A folder for servers' data that the unprivileged user Valkey and PostgreSQL run as (when the
    tests run as root) may enter; pytest's own temporary folder is 0700."""
    import shutil
    import tempfile

    from cachestorm.stack import _reachable_temp_root

    root = tempfile.mkdtemp(prefix="cachestorm-tests-", dir=_reachable_temp_root())
    os.chmod(root, 0o755)
    yield Path(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def server_dir(server_root):
    """A fresh folder under `server_root`, for a test's own `start_redis`/`start_postgres`."""
    import tempfile

    path = Path(tempfile.mkdtemp(dir=server_root))
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="module")
def valkey(server_root):
    """A private Valkey for tests that must not share the session stack's (TCP and a Unix socket)."""
    import tempfile

    from cachestorm.stack.servers import start_redis

    base = tempfile.mkdtemp(prefix="valkey-", dir=server_root)
    os.chmod(base, 0o755)
    server = start_redis(base, unix_socket=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy_process(tmp_path_factory, server_root):
    """A private chaos proxy (python -m chaos.proxy), stopped after the module; it may forward to the
    tests' own Unix sockets (under pytest's temporary folder or `server_root`)."""
    from cachestorm.chaos.proxy.process import spawn

    process = spawn(allow_unix=[tmp_path_factory.getbasetemp(), server_root])
    yield process
    process.stop()


@pytest.fixture()
def proxy_api(proxy_process):
    """A Toxiproxy client on the module's proxy process; deletes the proxies the test made."""
    from cachestorm.chaos.toxiproxy import ToxiproxyClient

    client = ToxiproxyClient(proxy_process.api_url)
    yield client
    for name in client.proxies():
        client.delete_proxy(name)
    client.close()


@pytest.fixture(scope="module")
def echo():
    from tests.net_servers import EchoServer

    server = EchoServer()
    yield server
    server.close()
