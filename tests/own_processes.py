"""Find the processes a test started, and only those: by a marker in their environment (inherited by
every child) or a folder of the test's own in their command line (PostgreSQL rewrites its environ area
for its process title). Never by scanning the machine for a program name: other work runs there too."""

from __future__ import annotations

import os
from pathlib import Path


def marker_env(env: dict[str, str], name: str) -> tuple[dict[str, str], str]:
    """`env` plus a unique marker variable; returns (env, marker) for `processes_with`."""
    marker = f"CACHESTORM_TEST_MARK={os.getpid()}-{name}"
    key, value = marker.split("=", 1)
    return {**env, key: value}, marker


def processes_with(marker: str, folder: Path | None = None) -> list[str]:
    """Live processes that inherited `marker` or name `folder`, as 'PID cmdline' lines."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if (marker.encode() in environ or (folder is not None and str(folder) in cmdline)) and state != "Z":
            found.append(f"{pid} {cmdline[:120]}")
    return found
