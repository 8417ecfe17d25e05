"""Start the proxy as a child process and wait for its ready file (for the stack, tests, bench)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from cachestorm.core.errors import CachestormError


class ProxyProcess:
    def __init__(self, popen: subprocess.Popen, api_url: str):
        self.popen = popen
        self.pid = popen.pid
        self.api_url = api_url

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)


def spawn(
    host: str = "127.0.0.1",
    port: int = 0,
    config: str | None = None,
    timeout: float = 15.0,
    busy_poll_us: int = 0,
    env: dict[str, str] | None = None,
    allow_unix: Iterable[str] = (),
) -> ProxyProcess:
    """Run `python -m chaos.proxy` and return once its API answers on the address it reports.
    `env`: extra environment variables (e.g. CACHESTORM_PROXY_FASTPATH=0). `allow_unix`: Unix sockets
    (or folders of them) its proxies may forward to."""
    ready = Path(tempfile.mkdtemp(prefix="cachestorm-proxy-")) / "ready.json"
    command = [sys.executable, "-m", "cachestorm.chaos.proxy", "--host", host, "--port", str(port), "--ready-file", str(ready)]
    if config:
        command += ["--config", config]
    if busy_poll_us:
        command += ["--busy-poll-us", str(busy_poll_us)]
    for path in allow_unix:
        command += ["--allow-unix", str(path)]
    popen = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            info = json.loads(ready.read_text())
            ready.unlink()
            ready.parent.rmdir()
            return ProxyProcess(popen, info["api_url"])
        if popen.poll() is not None:
            err = popen.stderr.read().decode(errors="replace").strip().splitlines()
            raise CachestormError(f"the chaos proxy exited at start: {err[-1] if err else popen.returncode}")
        time.sleep(0.02)
    popen.kill()
    raise CachestormError(f"the chaos proxy did not get ready within {timeout:.0f}s")
