"""Signalling a process by PID with a guard against PID reuse (the start time from /proc)."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def state_letter(pid: int) -> str | None:
    """R, S, T (stopped), Z ...; None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def signal_if_same(pid: int, started: str | None, sig: signal.Signals) -> bool:
    """Send `sig` only if the PID still belongs to the process we saw; True if sent."""
    if started is not None and start_time(pid) != started:
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
