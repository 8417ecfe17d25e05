"""Child processes of the stack: start detached, wait for readiness, stop by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from cachestorm.core import guardian
from cachestorm.core.errors import CachestormError


def free_port() -> int:
    """A port that was free a moment ago; callers retry on a bind collision."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def child_env() -> dict[str, str]:
    """Our environment for a Python child, its output unbuffered (a crash's last lines reach the log)."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# Every server process this process started, in order. A Ctrl-C can land between the fork and the
# moment a caller keeps the Popen (it is then lost to the caller); `kill_spawned_since` finds it here.
SPAWNED: list[subprocess.Popen] = []
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def spawn(argv: list[str], log_path: Path, **popen_kwargs) -> subprocess.Popen:
    """Start a server in its own session so a terminal's Ctrl-C reaches only us; we stop it."""
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps the descriptor
    try:
        with interrupts_deferred():  # no interrupt between the fork and the registration below
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, close_fds=True, **popen_kwargs,
            )
            SPAWNED.append(process)
            guardian.track_process(process.pid)  # a run that is SIGKILLed does not leave it running
        return process
    except FileNotFoundError as exc:
        raise CachestormError(f"cannot run {argv[0]}: not found") from exc
    finally:
        log.close()


@contextmanager
def interrupts_deferred():
    """Hold SIGINT/SIGTERM back for a moment and deliver them afterwards through the usual handlers.
    (Blocking them with the signal mask instead would be inherited by the server we start.)"""
    pending: list[int] = []
    previous = {}
    try:
        for signum in _SIGNALS:
            previous[signum] = signal.signal(signum, lambda number, frame: pending.append(number))
    except ValueError:  # not the main thread: handlers cannot change, and no Ctrl-C lands here
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if pending:
            signal.raise_signal(pending[0])  # now through the restored handler (or the default action)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a server started in its own session, with its whole process group (PostgreSQL's
    workers), and wait until the group is gone: the leader's workers may still be finishing a write
    into the folder the caller deletes next. TimeoutExpired if the leader outlives 10 s."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if process.poll() is None:
            process.kill()
    process.wait(timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)


def kill_spawned_since(mark: int) -> None:
    """SIGKILL every still-running process group spawned after `mark` (= len(SPAWNED) back then), and
    wait until each group is gone, so the caller can delete their folders."""
    for process in SPAWNED[mark:]:
        if process.poll() is not None:
            continue
        try:
            kill_group(process)
        except subprocess.TimeoutExpired:
            continue


def wait_until(ready: Callable[[], bool], process: subprocess.Popen | None, what: str,
               log_path: Path | None, timeout_s: float = 30.0) -> None:
    """Poll `ready` until it is true; fail fast if the process died."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        if process is not None and process.poll() is not None:
            raise CachestormError(f"{what} exited with code {process.returncode} before it was ready"
                                  f"{_log_hint(log_path)}")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            pass
        if time.monotonic() > deadline:
            raise CachestormError(f"{what} did not become ready within {timeout_s:.0f} s{_log_hint(log_path)}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _log_hint(log_path: Path | None) -> str:
    if log_path is None or not log_path.exists():
        return ""
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    return f" (last log line: {last[:200]}; full log: {log_path})" if last else f" (log: {log_path})"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours still answers kill(0); treat it as gone
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def pid_matches(pid: int, needle: str) -> bool:
    """Guard against PID reuse: only signal a process whose command line names what we started."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return needle in cmdline


def stop_pid(pid: int, needle: str, graceful: int = signal.SIGTERM, timeout_s: float = 10.0) -> bool:
    """Graceful signal, then SIGKILL after `timeout_s`. True if a process was stopped."""
    if not pid_alive(pid) or not pid_matches(pid, needle):
        return False
    try:
        os.kill(pid, graceful)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.02)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
