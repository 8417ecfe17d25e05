"""The stack: Redis, PostgreSQL and the chaos proxy in front of each.

Embedded by default (child processes on free loopback ports), or adopted from URLs
(`--redis-url`, `--postgres-url`, `--toxiproxy-url`), e.g. the docker-compose topology.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cachestorm.chaos.context import ChaosContext
from cachestorm.core import guardian
from cachestorm.core.errors import CachestormError
from cachestorm.core.interrupts import raise_if_swallowed
from cachestorm.core.processes import (
    SPAWNED,
    interrupts_deferred,
    kill_spawned_since,
    pid_alive,
    spawn,
    stop_pid,
    wait_until,
)
from cachestorm.core.urls import check_url, is_loopback, redact
from cachestorm.stack.servers import Server, start_postgres, start_redis

STATE_DIR = ".cachestorm"
STATE_FILE = "stack.json"
REDIS_PROXY = "redis"
POSTGRES_PROXY = "postgres"


@dataclass
class StackSettings:
    redis_url: str | None = None
    postgres_url: str | None = None
    toxiproxy_url: str | None = None
    # our proxy reaches our own Valkey/PostgreSQL over their Unix sockets (clients still use TCP):
    # it saves the second TCP loopback leg. `cachestorm bench proxy` on 2 cores, ratio to direct:
    # in the kernel 0.52-0.55x -> 0.62-0.64x, epoll engine 0.43-0.46x -> 0.49-0.54x, Python path
    # 0.40-0.45x -> 0.48-0.54x. False keeps TCP; a real Toxiproxy always gets TCP.
    unix_upstreams: bool = True
    allow_remote: bool = False  # adopt servers on other hosts (load and faults go there)


@dataclass
class StackState:
    redis_url: str
    redis_proxy_url: str
    postgres_url: str
    postgres_proxy_url: str
    proxy_api_url: str
    servers: list[dict] = field(default_factory=list)   # the processes we own, as Server dicts
    base_dir: str | None = None                          # temporary data we own
    started_at: float = 0.0

    def endpoints(self) -> dict[str, str]:
        """For display and run folders: passwords redacted (clients take the URLs from the state file)."""
        return {name: redact(url) for name, url in (
            ("redis", self.redis_url), ("redis (proxied)", self.redis_proxy_url), ("postgres", self.postgres_url),
            ("postgres (proxied)", self.postgres_proxy_url), ("proxy api", self.proxy_api_url))}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> StackState:
        return cls(**data)


# ---------------------------------------------------------------- URL checks

def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 0


def with_host_port(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return parts._replace(netloc=f"{userinfo}{host}:{port}").geturl()


# ---------------------------------------------------------------- start / stop

def validate_stack_settings(settings: StackSettings) -> None:

    for flag, url, schemes in (("--redis-url", settings.redis_url, ("redis",)),
                               ("--postgres-url", settings.postgres_url, ("postgresql", "postgres")),
                               ("--toxiproxy-url", settings.toxiproxy_url, ("http",))):
        if not url:
            continue
        check_url(url, schemes, flag)
        host = urlsplit(url).hostname or ""
        if not settings.allow_remote and not is_loopback(host):
            raise CachestormError(f"{flag} {redact(url)}: {host} is not this machine, and cachestorm sends its load and "
                                  "faults there; pass --allow-remote if that is what you want")


def start_stack(settings: StackSettings) -> StackState:
    """Start (or adopt) every part; on any failure stop what was started and re-raise."""
    validate_stack_settings(settings)
    base_dir = tempfile.mkdtemp(prefix="cachestorm-stack-", dir=_reachable_temp_root())
    os.chmod(base_dir, 0o755)  # PostgreSQL runs as an unprivileged user when we are root
    guardian.track_dir(base_dir)  # a stack owned by a run goes with it, even when the run is SIGKILLed
    owned: list[Server] = []
    mark = len(SPAWNED)  # servers spawned from here on are ours to stop if the start fails
    use_unix = _unix_upstreams_wanted(settings)
    try:
        redis_server = None if settings.redis_url else _own(owned, start_redis(base_dir, unix_socket=use_unix))
        redis_url = settings.redis_url or redis_server.url
        _check_redis(redis_url)
        postgres_server = None if settings.postgres_url else _own(owned, start_postgres(base_dir))
        postgres_url = settings.postgres_url or postgres_server.url
        _check_postgres(postgres_url)
        own_sockets = [s.extra["unix_socket"] for s in owned if s.extra.get("unix_socket")]
        proxy_api_url = settings.toxiproxy_url or _own(owned, start_proxy(base_dir, own_sockets)).url
        redis_proxy_url = _ensure_proxy(proxy_api_url, REDIS_PROXY, redis_url,
                                        _unix_upstream(redis_server) if use_unix else None)
        postgres_proxy_url = _ensure_proxy(proxy_api_url, POSTGRES_PROXY, postgres_url,
                                           _unix_upstream(postgres_server) if use_unix else None)
        raise_if_swallowed()  # a Ctrl-C lost in some __del__ on the way must still stop everything
    except BaseException:
        for server in reversed(owned):
            server.stop()
        kill_spawned_since(mark)  # a server whose start was interrupted before we could own it
        shutil.rmtree(base_dir, ignore_errors=True)
        raise
    return StackState(redis_url, redis_proxy_url, postgres_url, postgres_proxy_url, proxy_api_url,
                      [s.as_dict() for s in owned], base_dir, time.time())


def _reachable_temp_root() -> str | None:
    """The temp folder, unless we are root and it is private (TMPDIR in a 0700 home): PostgreSQL, run as
    an unprivileged user, must reach its data folder, so /var/tmp is used then."""
    from cachestorm.stack.servers import _readable_by_others

    if os.geteuid() != 0 or _readable_by_others(Path(tempfile.gettempdir())):
        return None
    return "/var/tmp"


def stop_stack(state: StackState) -> list[str]:
    """Stop what we started, delete our temporary data. Safe twice. Returns what was stopped."""
    stopped = []
    for data in reversed(state.servers):
        server = Server.from_dict(data)
        if server.pid and pid_alive(server.pid):
            stopped.append(server.kind)
        server.stop()
    if state.base_dir:
        shutil.rmtree(state.base_dir, ignore_errors=True)
    return stopped


def restart_redis(state: StackState) -> StackState:
    """Stop our Redis and start an empty one on the same port: the cache is lost, URLs stay valid."""
    for index, data in enumerate(state.servers):
        if data["kind"] != "redis":
            continue
        old = Server.from_dict(data)
        old.stop()
        _, port = host_port(old.url)
        # same base dir and port: the same Unix socket path, so the proxy's `unix:` upstream stays valid
        new = start_redis(Path(old.data_dir).parent, binary=old.binary, port=port,
                          unix_socket=bool(old.extra.get("unix_socket")))
        state.servers[index] = new.as_dict()
        return state
    raise CachestormError("this stack's Redis was not started by cachestorm (adopted via --redis-url); "
                          "restart it yourself")


def _own(owned: list[Server], server: Server) -> Server:
    owned.append(server)
    return server


def start_proxy(base_dir: str, unix_sockets: Iterable[str] = ()) -> Server:
    """Our Toxiproxy-compatible proxy; it picks its own port and writes it to a ready file.
    `unix_sockets`: our own servers' sockets, the only Unix upstreams it will forward to."""
    ready_file = Path(base_dir) / "proxy-ready.json"
    log_path = Path(base_dir) / "proxy.log"
    argv = [sys.executable, "-m", "cachestorm.chaos.proxy", "--host", "127.0.0.1", "--port", "0",
            "--ready-file", str(ready_file), *(arg for path in unix_sockets for arg in ("--allow-unix", path))]
    process = spawn(argv, log_path)
    try:
        wait_until(ready_file.exists, process, "the chaos proxy", log_path, timeout_s=30)
    except BaseException:
        process.kill()
        process.wait()
        raise
    ready = json.loads(ready_file.read_text())
    return Server("proxy", ready["api_url"], process.pid, "cachestorm.chaos.proxy", None, str(log_path), sys.executable)


def _unix_upstreams_wanted(settings: StackSettings) -> bool:
    return settings.unix_upstreams and not settings.toxiproxy_url  # a real Toxiproxy speaks TCP only


def _unix_upstream(server: Server | None) -> str | None:
    """`unix:<path>` when we own the server and this process can connect to its Unix socket (our
    proxy runs as the same user): the proxy then reaches it without the kernel's TCP loopback cost,
    which is most of the proxy's overhead on a small machine. None: keep TCP."""
    path = server.extra.get("unix_socket") if server is not None else None
    if not path:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(path)
    except OSError:
        return None
    return f"unix:{path}"


def _ensure_proxy(api_url: str, name: str, upstream_url: str, unix_upstream: str | None = None) -> str:
    """Return the proxied URL for `name`, creating the proxy unless it already exists (compose).
    `unix_upstream` (our own proxy only): the proxy reaches the server over that Unix socket;
    clients still use TCP to the proxy."""
    from cachestorm.chaos.toxiproxy import ToxiproxyClient

    with ToxiproxyClient(api_url) as client:
        proxies = client.proxies()
        if name in proxies:
            proxy = proxies[name]
        else:
            host, port = host_port(upstream_url)
            proxy = client.create_proxy(name, listen="127.0.0.1:0", upstream=unix_upstream or f"{host}:{port}")
    listen_port = int(proxy["listen"].rsplit(":", 1)[1])
    api_host = urlsplit(api_url).hostname or "127.0.0.1"
    return with_host_port(upstream_url, api_host, listen_port)


def _check_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        raise CachestormError(f"Redis at {redact(url)} does not answer PING ({exc.__class__.__name__}: "
                              f"{redact(str(exc))[:120]}); check --redis-url or that the server runs") from exc
    finally:
        with interrupts_deferred():  # redis-py's __del__ methods run here, where a Ctrl-C would be lost
            client.close()
            del client
            gc.collect()


def _check_postgres(url: str) -> None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CachestormError(f"PostgreSQL at {redact(url)} refused a connection ({redact(first)[:160]}); "
                              "check --postgres-url or that the server runs") from exc


# ---------------------------------------------------------------- the state file of `up`

def state_path(workdir: str | Path = ".") -> Path:
    return Path(workdir) / STATE_DIR / STATE_FILE


def save_state(state: StackState, workdir: str | Path = ".") -> Path:
    path = state_path(workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)  # a leftover could have another mode; O_EXCL below creates ours
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the PostgreSQL password
    with os.fdopen(fd, "w") as handle:
        handle.write(state.to_json())
    os.replace(tmp, path)
    return path


def load_state(workdir: str | Path = ".") -> StackState | None:
    from cachestorm.core.trusted import check_own

    path = state_path(workdir)
    check_own(path.parent, "the state folder", "run cachestorm in a folder of yours, or remove it")
    if not path.exists():
        return None
    check_own(path, "the state file", "run cachestorm in a folder of yours, or remove it")  # PIDs, folders to delete
    try:
        return StackState.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise CachestormError(f"{path} is not a cachestorm state file ({exc}); delete it and stop "
                              f"leftover servers by hand{_leftovers_hint(path)}") from exc


def _leftovers_hint(path: Path) -> str:
    """The PIDs a damaged state file still names and that are alive, so 'by hand' is concrete."""
    import re

    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    pids = sorted({int(p) for p in re.findall(r'"pid"\s*:\s*(\d+)', text) if pid_alive(int(p))})
    return f" (still running: PIDs {', '.join(map(str, pids))})" if pids else " (none of its PIDs is running)"


@contextmanager
def state_lock(workdir: str | Path = "."):
    """One `up` or `down` at a time per folder: two parallel `up`s would both start a stack, and the
    state file would keep only one of them."""
    from cachestorm.core.trusted import check_own

    path = state_path(workdir).with_name("stack.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    check_own(path.parent, "the state folder", "run cachestorm in a folder of yours, or remove it")
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clear_state(workdir: str | Path = ".") -> None:
    state_path(workdir).unlink(missing_ok=True)


def health(state: StackState) -> dict[str, tuple[bool, str]]:
    """Each part's health: name -> (healthy, detail)."""
    results: dict[str, tuple[bool, str]] = {}
    for name, url, check in (("redis", state.redis_url, _check_redis),
                             ("redis (proxied)", state.redis_proxy_url, _check_redis),
                             ("postgres", state.postgres_url, _check_postgres),
                             ("postgres (proxied)", state.postgres_proxy_url, _check_postgres)):
        try:
            check(url)
            results[name] = (True, redact(url))
        except CachestormError as exc:
            results[name] = (False, str(exc))
    try:
        from cachestorm.chaos.toxiproxy import ToxiproxyClient

        results["proxy api"] = (True, f"{state.proxy_api_url} (version {ToxiproxyClient(state.proxy_api_url).version()})")
    except CachestormError as exc:
        results["proxy api"] = (False, str(exc))
    return results



def context_from_stack(state, **overrides) -> ChaosContext:
    """A chaos context for the stack started by `cachestorm up` (a `StackState`)."""

    def restart() -> None:  # `up`'s state file must learn the new PID, or `down` would miss it
        save_state(restart_redis(state))

    owns_redis = any(server.get("kind") == "redis" for server in getattr(state, "servers", []))
    ctx = ChaosContext(redis_url=state.redis_url, postgres_url=state.postgres_url,
                       proxy_api_url=state.proxy_api_url, restart_redis=restart if owns_redis else None)
    for key, value in overrides.items():
        if value is not None:
            setattr(ctx, key, value)
    return ctx

__all__ = ["StackSettings", "StackState", "start_stack", "stop_stack", "restart_redis", "save_state", "load_state",
           "clear_state", "context_from_stack", "health", "state_path", "state_lock", "stop_pid"]
