"""A target (`python -m cachestorm.targets ...`) as a child process: started, health-checked, stopped.

The conductor starts a run's instances with it, tests and benchmarks through targets/testing.py.
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cachestorm.core.processes import child_env, spawn, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_MODULE = "cachestorm.targets"  # `python -m` it; its command line names "targets", as `ps` shows it
SEED_S_PER_ROW = 25e-6  # start-up allowance per --rows row: seeding 1 M rows took 22 s on 2 loaded cores


@dataclass
class TargetProcess:
    name: str
    port: int
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)  # on top of ours: the stack's URLs (passwords stay off argv)
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout_s: float | None = None) -> TargetProcess:
        return self.launch().wait_ready(timeout_s)

    def launch(self) -> TargetProcess:
        """Spawn it and return at once (`wait_ready` next): several targets start side by side."""
        self.process = spawn(self.argv, self.log_path, cwd=str(REPO_ROOT), env={**child_env(), **self.env})
        return self

    def wait_ready(self, timeout_s: float | None = None) -> TargetProcess:
        """Until /healthz answers: 60 s, plus what seeding --rows may take (10 M rows: 4 more minutes)."""
        if timeout_s is None:
            timeout_s = 60.0 + SEED_S_PER_ROW * self._rows()
        try:
            wait_until(self._healthy, self.process, f"target {self.name}", self.log_path, timeout_s=timeout_s)
        except BaseException:  # Ctrl-C while it starts: the caller does not track it yet, so stop it here
            self.stop()
            raise
        return self

    def _rows(self) -> int:
        argv = [str(arg) for arg in self.argv]
        for index, arg in enumerate(argv):
            if arg == "--rows" and index + 1 < len(argv) and argv[index + 1].isdigit():
                return int(argv[index + 1])
            if arg.startswith("--rows=") and arg[7:].isdigit():
                return int(arg[7:])
        return 0

    def restart(self) -> None:
        self.stop()
        self.start()

    def _healthy(self) -> bool:
        return httpx.get(f"{self.base_url}/healthz", timeout=1.0).status_code == 200

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # our own child, not reaped yet: its PID cannot be someone else's, so no command-line check
            # (stop_pid's would miss a child stopped between its fork and its exec: an interrupt there)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> TargetProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
