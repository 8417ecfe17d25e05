"""Other local users on a shared host get nothing: PostgreSQL needs its generated password and its socket
is private, the proxy API (root, no authentication) opens only loopback listeners and our own Unix
sockets, and passwords of adopted servers never reach a run folder or a command line."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from cachestorm.chaos.toxiproxy import ToxiproxyClient, ToxiproxyError

# no ~/.pgpass, no PGPASSWORD: only what a test passes
NO_STORED_PASSWORD = {"passfile": "/dev/null"}


def _postgres(stack) -> tuple[urlsplit, str]:
    [server] = [s for s in stack.servers if s["kind"] == "postgres"]
    return urlsplit(stack.postgres_url), server["extra"]["unix_socket"]


def _attempt(**conninfo) -> str:
    """'ok' or the first line of the error."""
    os.environ.pop("PGPASSWORD", None)
    try:
        with psycopg.connect(dbname="cachestorm", user="postgres", connect_timeout=5, **NO_STORED_PASSWORD,
                             **conninfo) as conn:
            conn.execute("SELECT 1")
        return "ok"
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


def test_postgres_refuses_a_login_without_its_password(stack):
    url, _ = _postgres(stack)
    assert url.password and len(url.password) >= 20
    refused = _attempt(host="127.0.0.1", port=url.port)
    assert "password" in refused, refused
    assert "password authentication failed" in _attempt(host="127.0.0.1", port=url.port, password="postgres")
    assert _attempt(host="127.0.0.1", port=url.port, password=url.password) == "ok"


def _as_user(name: str, work) -> dict:
    """Run `work()` (returning a JSON-able value) in a forked child with `name`'s uid and gid only."""
    user = pwd.getpwnam(name)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os.write(write_end, json.dumps(work()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(answer)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another local user needs root")
def test_another_local_user_cannot_reach_postgres(stack):
    url, socket_path = _postgres(stack)

    def try_everything() -> dict:
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(socket_path)
                raw_socket = "connected"
            except OSError as exc:
                raw_socket = exc.__class__.__name__
        return {"tcp, no password": _attempt(host="127.0.0.1", port=url.port),
                "socket, no password": _attempt(host=str(Path(socket_path).parent), port=url.port),
                "socket": raw_socket,
                "tcp, the password": _attempt(host="127.0.0.1", port=url.port, password=url.password)}

    seen = _as_user("nobody", try_everything)
    assert "password" in seen["tcp, no password"], seen
    assert "Permission denied" in seen["socket, no password"], seen
    assert seen["socket"] == "PermissionError", seen
    assert seen["tcp, the password"] == "ok", seen  # the refusals above are about the password, not reachability


# ---------------------------------------------------------------- the proxy API

@pytest.fixture(scope="module")
def guarded_proxy(valkey):
    """A proxy allowed to forward to one Unix socket (the private Valkey's), like the stack's."""
    from cachestorm.chaos.proxy.process import spawn

    process = spawn(allow_unix=[valkey.extra["unix_socket"]])
    client = ToxiproxyClient(process.api_url)
    yield client
    client.close()
    process.stop()


@pytest.mark.parametrize("listen, upstream, message", [
    ("0.0.0.0:0", "127.0.0.1:6379", "listen 0.0.0.0:0: 0.0.0.0 is not a loopback address"),
    ("[::]:0", "127.0.0.1:6379", "listen [::]:0: :: is not a loopback address"),
    ("example.com:0", "127.0.0.1:6379", "is not a loopback address"),
    ("127.0.0.1:80", "127.0.0.1:6379", "listen 127.0.0.1:80: port 80 is privileged"),
    ("127.0.0.1:0", "unix:/run/some-root-only.sock", "upstream unix:/run/some-root-only.sock: not one of this "
                                                     "stack's own Unix sockets"),
])
def test_proxy_refuses_what_a_local_user_should_not_open(guarded_proxy, listen, upstream, message):
    with pytest.raises(ToxiproxyError) as refused:
        guarded_proxy.create_proxy("sneaky", listen, upstream)
    assert refused.value.status == 403
    text = str(refused.value)
    assert message in text and "--allow-remote" in text and "\n" not in text
    assert "sneaky" not in guarded_proxy.proxies()


def test_proxy_refuses_the_same_through_populate_and_update(guarded_proxy, valkey, tmp_path):
    outside = tmp_path / "elsewhere.sock"
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(outside))
        (tmp_path / "link.sock").symlink_to(outside)
        with pytest.raises(ToxiproxyError, match="not one of this stack's own Unix sockets"):
            guarded_proxy.populate([{"name": "p", "listen": "127.0.0.1:0", "upstream": f"unix:{tmp_path / 'link.sock'}"}])
        own = guarded_proxy.create_proxy("own", "127.0.0.1:0", f"unix:{valkey.extra['unix_socket']}")
        try:
            for change in ({"listen": "0.0.0.0:0"}, {"upstream": f"unix:{outside}"}):
                with pytest.raises(ToxiproxyError) as refused:
                    guarded_proxy.update_proxy("own", **change)
                assert refused.value.status == 403
            assert guarded_proxy.get_proxy("own")["listen"] == own["listen"]  # untouched, still serving
            port = int(own["listen"].rsplit(":", 1)[1])
            assert redis.Redis(port=port, socket_timeout=5).ping()
        finally:
            guarded_proxy.delete_proxy("own")
    assert "p" not in guarded_proxy.proxies()


def test_allow_remote_lifts_the_limits(tmp_path):
    from cachestorm.chaos.proxy.process import spawn

    process = spawn(config=None)
    strict = ToxiproxyClient(process.api_url)
    try:
        with pytest.raises(ToxiproxyError, match="not one of this stack's own Unix sockets"):
            strict.create_proxy("u", "127.0.0.1:0", f"unix:{tmp_path / 'x.sock'}")  # nothing allowed by default
    finally:
        strict.close()
        process.stop()
    command = [sys.executable, "-m", "cachestorm.chaos.proxy", "--port", "0", "--allow-remote", "--ready-file",
               str(tmp_path / "ready.json")]
    permissive = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        from cachestorm.core.processes import wait_until

        wait_until((tmp_path / "ready.json").exists, permissive, "the proxy", None, timeout_s=30)
        with ToxiproxyClient(json.loads((tmp_path / "ready.json").read_text())["api_url"]) as client:
            assert client.create_proxy("u", "127.0.0.1:0", f"unix:{tmp_path / 'x.sock'}")["upstream"].startswith("unix:")
    finally:
        permissive.terminate()
        permissive.wait(10)


def test_proxy_api_itself_stays_on_loopback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cachestorm.chaos.proxy", "--host", "0.0.0.0", "--port", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --host 0.0.0.0 is not a loopback address")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_the_stacks_proxy_forwards_only_to_its_own_sockets(stack, tmp_path):
    with ToxiproxyClient(stack.proxy_api_url) as client:
        assert all(p["upstream"].startswith("unix:") for p in client.proxies().values())  # its own: allowed
        with pytest.raises(ToxiproxyError, match="not one of this stack's own Unix sockets"):
            client.create_proxy("foreign", "127.0.0.1:0", f"unix:{tmp_path / 'x.sock'}")


# ---------------------------------------------------------------- passwords of adopted servers

def test_redact_replaces_every_url_password():
    from cachestorm.core.urls import redact

    assert redact("postgresql://postgres:s3cr%40t@127.0.0.1:5/db") == "postgresql://postgres:***@127.0.0.1:5/db"
    assert redact('{"u": "redis://:pw@h:1/0", "v": "redis://h:1/0"}') == '{"u": "redis://:***@h:1/0", "v": "redis://h:1/0"}'
    assert redact("a postgres://u:p@h:1/d and redis://x:y@h:2") == "a postgres://u:***@h:1/d and redis://x:***@h:2"
    assert redact("redis://user@h:1/0 http://127.0.0.1:8474") == "redis://user@h:1/0 http://127.0.0.1:8474"


@pytest.fixture()
def redis_with_password(valkey):
    password = "redis-Secret-4711"
    admin = redis.Redis.from_url(valkey.url)
    admin.config_set("requirepass", password)
    yield f"redis://:{password}@127.0.0.1:{urlsplit(valkey.url).port}/0", password
    redis.Redis.from_url(valkey.url, password=password).config_set("requirepass", "")


@pytest.mark.slow
def test_a_run_with_passwords_leaves_them_nowhere(stack, redis_with_password, tmp_path, monkeypatch):
    from cachestorm.conductor import RunSettings, run
    from cachestorm.stack import StackSettings

    redis_url, redis_password = redis_with_password
    postgres_password = urlsplit(stack.postgres_url).password
    monkeypatch.chdir(tmp_path)  # the fault ledger goes to ./.cachestorm
    seen: dict[str, bytes] = {}

    def watch(event: str, **info) -> None:
        children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == os.getpid()]
        for pid in children:
            seen[f"cmdline {pid}"] = _read(f"/proc/{pid}/cmdline")
        if event == "targets":
            [target] = info["targets"]
            seen["target cmdline"] = _read(f"/proc/{target.pid}/cmdline")
            seen["target environ"] = _read(f"/proc/{target.pid}/environ")

    run_dir = run(RunSettings(strategy="cache-aside", duration_s=4, users=5, spawn_rate=5, keys=100, rows=200,
                              recompute_ms=5, experiment="hot-key-expiry", experiment_at_s=1,
                              out=str(tmp_path / "runs"), explicit=frozenset({"duration_s"}),
                              stack=StackSettings(redis_url=redis_url, postgres_url=stack.postgres_url)),
                  on_event=watch)

    assert json.loads((run_dir / "run.json").read_text())["outcome"] == "ok"
    assert b"-m\0cachestorm.targets\0" in seen["target cmdline"]
    assert redis_password.encode() in seen["target environ"]  # it got the URL, by environment
    assert any(b"locust" in line for key, line in seen.items() if key.startswith("cmdline"))  # Locust's too
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert {"run.json", "journal.jsonl", "report.json"} <= {path.name for path in files}
    assert "***@127.0.0.1" in (run_dir / "run.json").read_text()
    for password in (redis_password, postgres_password):
        for name, command_line in seen.items():
            if "cmdline" in name:
                assert password.encode() not in command_line, f"{password} on the command line ({name})"
        leaked = [str(path.relative_to(run_dir)) for path in files if password.encode() in path.read_bytes()]
        assert not leaked, f"{password} in {leaked}"


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def test_an_allowed_folder_does_not_extend_through_symlinks(tmp_path):
    from cachestorm.chaos.proxy.errors import ApiError
    from cachestorm.chaos.proxy.guard import AddressGuard

    allowed, outside = tmp_path / "stack", tmp_path / "root-only"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "escape.sock").symlink_to(outside / "valkey.sock")
    guard = AddressGuard.of(unix_sockets=[str(allowed)])
    guard.check("127.0.0.1:0", f"unix:{allowed / 'redis-1.sock'}")
    for sneaky in (allowed / "escape.sock", allowed / ".." / "root-only" / "valkey.sock", Path(f"{allowed}-2/x.sock")):
        with pytest.raises(ApiError, match="not one of this stack's own Unix sockets"):
            guard.check("127.0.0.1:0", f"unix:{sneaky}")


def test_adopted_urls_can_come_from_the_environment(stack, tmp_path, cli_env):
    from cachestorm.targets.settings import URL_ENV

    env = {**cli_env, URL_ENV["postgres_url"]: stack.postgres_url}
    up = subprocess.run([sys.executable, "-m", "cachestorm", "up", "--json"], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((tmp_path / ".cachestorm" / "stack.json").read_text())
        assert state["postgres_url"] == stack.postgres_url  # adopted, password and all
        assert urlsplit(stack.postgres_url).password not in up.stdout + up.stderr
        assert [s["kind"] for s in state["servers"]] == ["redis", "proxy"]
    finally:
        subprocess.run([sys.executable, "-m", "cachestorm", "down"], cwd=tmp_path, env=env, timeout=120)


# ---------------------------------------------------------------- Valkey

def _uids(pid: int) -> set[int]:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
    return {int(uid) for uid in line.split()[1:]}


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges happens as root only")
def test_valkey_runs_unprivileged_and_owns_only_its_folders(stack):
    from cachestorm.stack.servers import _unprivileged_user

    [server] = [s for s in stack.servers if s["kind"] == "redis"]
    user = _unprivileged_user()
    assert _uids(server["pid"]) == {user.pw_uid}, "Valkey runs as root"
    assert Path(server["data_dir"]).stat().st_uid == user.pw_uid
    socket_path = Path(server["extra"]["unix_socket"])
    assert socket_path.parent.stat().st_uid == user.pw_uid and socket_path.parent.stat().st_mode & 0o077 == 0
    assert Path(stack.base_dir).stat().st_uid == 0  # the stack's folder stays ours

    def try_the_socket() -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(socket_path))
                return "connected"
            except OSError as exc:
                return exc.__class__.__name__

    if user.pw_name != "nobody":
        assert _as_user("nobody", try_the_socket) == "PermissionError"


def test_valkey_refuses_debug_and_module_commands(stack):
    client = redis.Redis.from_url(stack.redis_url, socket_timeout=5)
    try:
        for command in (("DEBUG", "SLEEP", "0"), ("DEBUG", "SET-ACTIVE-EXPIRE", "1"),
                        ("MODULE", "LOAD", "/nonexistent.so")):
            with pytest.raises(redis.ResponseError, match="not allowed"):
                client.execute_command(*command)
        with pytest.raises(redis.ResponseError, match="protected config"):
            client.config_set("dir", "/root")
    finally:
        client.close()


# ---------------------------------------------------------------- the state under .cachestorm/

@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")
@pytest.mark.parametrize("planted", ["state folder", "state file", "record folder"])
def test_down_acts_on_no_state_another_user_may_write(planted, tmp_path, cli_env):
    """`down` stops the PIDs and deletes the folders that .cachestorm/ names: as root, from a folder another
    user made (or may write to), that would be any process and any folder of the machine."""
    nobody = pwd.getpwnam("nobody").pw_uid
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me\n")
    work = tmp_path / "work"
    state = work / ".cachestorm"
    (state / "owned").mkdir(parents=True)
    server = {"kind": "redis", "url": "redis://127.0.0.1:1/0", "pid": None, "needle": "", "data_dir": str(victim),
              "log_path": None, "binary": "", "extra": {}}
    (state / "stack.json").write_text(json.dumps({"redis_url": "", "redis_proxy_url": "", "postgres_url": "",
                                                  "postgres_proxy_url": "", "proxy_api_url": "",
                                                  "servers": [server], "base_dir": str(victim)}))
    (state / "owned" / "1.json").write_text(json.dumps({"owner": {"pid": 1, "start_time": None}, "dirs": [str(victim)],
                                                        "processes": []}))
    if planted == "state folder":
        os.chown(state, nobody, -1)
    elif planted == "state file":
        os.chmod(state / "stack.json", 0o666)
    else:
        (state / "stack.json").unlink()
        os.chown(state / "owned", nobody, -1)
    done = subprocess.run([sys.executable, "-m", "cachestorm", "down"], cwd=work, env=cli_env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.startswith("error: refusing the") and len(done.stderr.splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert (victim / "precious").read_text() == "keep me\n"
