"""The run folder and its journal: every step of a run writes a record; reports read only these.

A journal record is one JSON line:
    {"what", "kind", "start", "end", "t_start", "t_end", "outcome", "details"}
with wall-clock unix seconds (`start`, `end`) and seconds since the run started (`t_*`).
Passwords in URLs are redacted on the way into the journal and run.json: a run folder is shared freely.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cachestorm.core.errors import CachestormError
from cachestorm.core.urls import redact

JOURNAL = "journal.jsonl"
RUN_META = "run.json"


class Journal:
    """Append-only, thread-safe, flushed per record (a crash keeps what happened before it)."""

    def __init__(self, run_dir: str | Path, t0_wall: float | None = None):
        self.path = Path(run_dir) / JOURNAL
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0_wall = t0_wall if t0_wall is not None else time.time()
        self._lock = threading.Lock()

    def now(self) -> tuple[float, float]:
        wall = time.time()
        return wall, round(wall - self.t0_wall, 3)

    def record(self, what: str, kind: str, start: float, end: float | None, outcome: str,
               details: dict[str, Any] | None = None) -> dict:
        entry = {
            "what": what, "kind": kind, "start": start, "end": end,
            "t_start": round(start - self.t0_wall, 3),
            "t_end": None if end is None else round(end - self.t0_wall, 3),
            "outcome": outcome, "details": details or {},
        }
        line = redact(json.dumps(entry, default=str)) + "\n"
        with self._lock, open(self.path, "a") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        return entry

    @contextmanager
    def step(self, what: str, kind: str, **details: Any) -> Iterator[dict]:
        """Record a step with its outcome: ok, failed (with the error) or interrupted."""
        start = time.time()
        extra: dict[str, Any] = dict(details)
        try:
            yield extra
        except KeyboardInterrupt:
            self.record(what, kind, start, time.time(), "interrupted", extra)
            raise
        except BaseException as exc:
            extra["error"] = f"{exc.__class__.__name__}: {exc}"
            self.record(what, kind, start, time.time(), "failed", extra)
            raise
        self.record(what, kind, start, time.time(), "ok", extra)


def read_journal(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / JOURNAL
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a crash
    return records


def write_run_meta(run_dir: str | Path, meta: dict) -> None:
    path = Path(run_dir) / RUN_META
    tmp = path.with_suffix(".tmp")
    tmp.write_text(redact(json.dumps(meta, indent=2, default=str)))
    os.replace(tmp, path)


def read_run_meta(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / RUN_META).read_text())


def new_run_dir(out: str | Path, label: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_+." else "_" for c in label)
    base = make_folder(out) / f"{stamp}-{safe}"
    path, n = base, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
            path = Path(f"{base}-{n}")


def make_folder(path: str | Path, exist_ok: bool = True, flag: str = "--out") -> Path:
    """mkdir -p, or one line saying why not (a file in the way, no permission, a read-only place)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if path.is_dir():
            raise  # exist_ok=False: the caller picks another name
        raise CachestormError(f"{flag} {path}: a file is in the way; give a folder") from None
    except OSError as exc:
        raise CachestormError(f"{flag} {path}: cannot create a folder there ({exc.strerror}); "
                              "give a folder you can write to") from None
    return path
