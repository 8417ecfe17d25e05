"""The real Toxiproxy server as a reference to compare our proxy with (differential tests, bench).

It is not part of cachestorm: a checkout finds it beside the repository, in
`../shared/toxiproxy/toxiproxy-server`, or wherever CACHESTORM_TOXIPROXY_SERVER points.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from cachestorm.chaos.proxy.process import ProxyProcess

from cachestorm.core.errors import CachestormError

SERVER_ENV = "CACHESTORM_TOXIPROXY_SERVER"
REPO = Path(__file__).resolve().parents[1]
BESIDE_REPO = REPO.parent / "shared" / "toxiproxy" / "toxiproxy-server"


def find_binary() -> Path | None:
    """The toxiproxy-server to use, or None when there is none (callers skip, saying why)."""
    configured = os.environ.get(SERVER_ENV)
    candidate = Path(configured) if configured else BESIDE_REPO
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def missing_reason() -> str:
    return f"no real Toxiproxy server: set {SERVER_ENV} or put toxiproxy-server at {BESIDE_REPO}"


def _listening_ports(pid: int) -> list[int]:
    """TCP ports process `pid` listens on: its socket inodes matched against /proc/net/tcp{,6}.
    Toxiproxy does not log the port it got for `-port 0`, so this is how we learn it."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class ToxiproxyServer(ProxyProcess):
    """A running real Toxiproxy: stopped like our own proxy process."""


def start(binary: Path, proxy_metrics: bool = True, timeout: float = 15.0) -> ToxiproxyServer:
    """Run it on 127.0.0.1 and a free port; return once it listens."""
    command = [str(binary), "-host", "127.0.0.1", "-port", "0"] + (["-proxy-metrics"] if proxy_metrics else [])
    popen = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise CachestormError(f"{binary} exited at start with status {popen.returncode}")
        ports = _listening_ports(popen.pid)
        if ports:
            return ToxiproxyServer(popen, f"http://127.0.0.1:{ports[0]}")
        time.sleep(0.02)
    popen.kill()
    popen.wait()
    raise CachestormError(f"{binary} did not listen within {timeout:.0f}s")
