"""A watchdog that outlives its owner: what a SIGKILLed run started is stopped, its temp folders deleted.

A run (or matrix, or capacity sweep) keeps a record of the process groups and temp folders it owns in
`.cachestorm/owned/<pid>.json`, and a small guardian process reads a pipe from it. The pipe closes when
the owner exits, however it exits (a SIGKILL too). If the record is still there then, the owner did not
clean up: the guardian kills every recorded process group and deletes every recorded folder. A normal
end deletes the record first, and the guardian just exits. `cachestorm down` cleans up records whose
owner and guardian are both gone (a SIGKILL of the whole process tree).

A recorded process is killed only if its start time still matches (a reused PID is someone else's).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

OWNED_DIR = Path(".cachestorm") / "owned"

_current: Guardian | None = None
_local = threading.local()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


class Guardian:
    def __init__(self, workdir: str | Path = ".", what: str = "run"):
        self.path = (Path(workdir) / OWNED_DIR / f"{os.getpid()}.json").resolve()
        self.record: dict = {"owner": {"pid": os.getpid(), "start_time": start_time(os.getpid()), "what": what},
                             "processes": [], "dirs": []}
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None

    def start(self) -> Guardian:
        """Write the record and start the guardian process; done at the first thing to track, so a run
        that fails its checks leaves no `.cachestorm` folder and starts no process."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "cachestorm.core.guardian", str(self.path)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,  # not in the terminal's group: a Ctrl-C is the owner's
        )
        self.record["guardian"] = {"pid": self._process.pid, "start_time": start_time(self._process.pid)}
        self._write()
        return self

    def track_process(self, pid: int) -> None:
        """Kill this process's group if the owner dies without stopping it (it leads its own session)."""
        with self._lock:
            self._ensure_started()
            self.record["processes"].append({"pid": pid, "start_time": start_time(pid)})
            self._write()

    def track_dir(self, path: str | Path) -> None:
        with self._lock:
            self._ensure_started()
            self.record["dirs"].append(str(Path(path).resolve()))
            self._write()

    def close(self, orphans: bool = False) -> None:
        """The owner cleaned up itself: drop the record, let the guardian go. Safe twice.
        `orphans`: first check that every recorded process is gone; if one is not (its owner lost it,
        e.g. an interrupt between its start and its registration), keep the record, so the guardian
        stops it (and deletes the recorded folders) as for a SIGKILLed owner."""
        with self._lock:
            self._close(keep=orphans and any(_alive(entry) for entry in self.record["processes"]))

    def _close(self, keep: bool = False) -> None:
        if not keep:
            self.path.unlink(missing_ok=True)
        if self._process is not None:
            try:
                self._process.stdin.close()
                self._process.wait(timeout=30 if keep else 5)  # keep: it stops what still runs first
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
            self._process = None

    def _ensure_started(self) -> None:
        if self._process is None:
            self.start()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.record))
        os.replace(tmp, self.path)


@contextmanager
def guarded(what: str = "run", workdir: str | Path = ".", orphans: bool = False):
    """Everything spawned (any thread) while this is active is the guardian's to stop if we die.
    `orphans`: everything spawned is ours to stop before the end; what still runs then is stopped by
    the guardian (`Guardian.close`). Not for `up`, whose stack outlives it."""
    global _current
    if _current is not None:  # nested (a matrix's runs): the outer guardian already covers us
        yield _current
        return
    guardian = Guardian(workdir, what)
    _current = guardian
    try:
        yield guardian
    finally:
        _current = None
        guardian.close(orphans)


@contextmanager
def untracked():
    """Spawns in this thread belong to someone else (the stack of `cachestorm up`): do not record them."""
    previous = getattr(_local, "untracked", False)
    _local.untracked = True
    try:
        yield
    finally:
        _local.untracked = previous


def track_process(pid: int) -> None:
    if _current is not None and not getattr(_local, "untracked", False):
        _current.track_process(pid)


def track_dir(path: str | Path) -> None:
    if _current is not None and not getattr(_local, "untracked", False):
        _current.track_dir(path)


# ---------------------------------------------------------------- cleaning up after a dead owner

def _alive(entry: dict | None) -> bool:
    return bool(entry) and entry.get("start_time") is not None and start_time(entry["pid"]) == entry["start_time"]


def clean_up(record_path: Path) -> list[str]:
    """Kill what the record names and still runs, delete its folders, drop the record. What was done."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return []
    done = []
    for entry in record.get("processes", []):
        if not _alive(entry):
            continue
        try:
            os.killpg(entry["pid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(entry["pid"], signal.SIGKILL)
            except ProcessLookupError:
                continue
        done.append(f"process {entry['pid']}")
    for entry in record.get("processes", []):  # the folders go only once their writers are gone
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(entry["pid"]):
            time.sleep(0.02)
    for folder in record.get("dirs", []):
        if Path(folder).exists():
            shutil.rmtree(folder, ignore_errors=True)
            done.append(f"folder {folder}")
    record_path.unlink(missing_ok=True)
    return done


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        os.waitpid(-pgid, os.WNOHANG)  # reap our own children (tests) so they stop counting
    except ChildProcessError:
        pass
    return True


def clean_abandoned(workdir: str | Path = ".") -> tuple[list[str], list[int]]:
    """For `cachestorm down`: clean every record whose owner and guardian are gone. Returns what was done,
    and the PIDs of owners that still run (their records are left alone)."""
    from cachestorm.core.trusted import check_own

    done: list[str] = []
    running: list[int] = []
    folder = Path(workdir) / OWNED_DIR
    for part in (folder.parent, folder):  # their records say what to kill and delete, as us
        check_own(part, "the record folder", "run cachestorm in a folder of yours, or remove it")
    for record_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = {}
        if _alive(record.get("owner")) or _alive(record.get("guardian")):
            running.append(record["owner"]["pid"])
            continue
        done += clean_up(record_path)
    return done, running


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the owner's end (the pipe closing) ends us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    record_path = Path(argv[0])
    while sys.stdin.buffer.read(65536):
        pass
    if record_path.exists():
        clean_up(record_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
