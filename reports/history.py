"""Read operation histories (`histories/*.tsv`, format in docs/design.md) into columns.

One `History` holds every operation of a run as parallel columns (lists and
`array`s), not one object per operation: a million operations stay ~150 MB and
the checker indexes them by position.
"""

from __future__ import annotations

import gc
import sys
from array import array
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cachestorm.core.errors import CachestormError
from cachestorm.core.runfiles import damaged
from cachestorm.core.runfolder import RunFolder

MAGIC = "# cachestorm-history v1"
COLUMNS = ("key", "op", "start_ns", "end_ns", "start_wall", "status", "version", "source", "user",
           "request_id", "value")
NO_VERSION = -1  # the version column was empty
NO_TIME = -1  # end_ns was empty (the outcome never arrived)
_CHUNK_CHARS = 2 << 20  # a chunk is split into ~11 strings a line: 16 MB chunks peaked at ~250 MB

READ_OPS = frozenset({"read", "check"})
WRITE_OPS = frozenset({"write", "delete", "incr", "grant", "revoke"})
INDETERMINATE_STATUSES = frozenset({"timeout", "conn_error"})


def status_class(status: str) -> str:
    """'ok' (2xx), 'indeterminate' (timeout/conn_error: may or may not have applied) or 'failed'."""
    if len(status) == 3 and status[0] == "2" and status.isdigit():
        return "ok"
    if status in INDETERMINATE_STATUSES:
        return "indeterminate"
    return "failed"


@dataclass
class History:
    key: list[str] = field(default_factory=list)
    op: list[str] = field(default_factory=list)
    start_ns: array = field(default_factory=lambda: array("q"))
    end_ns: array = field(default_factory=lambda: array("q"))
    start_wall: array = field(default_factory=lambda: array("d"))
    status: list[str] = field(default_factory=list)
    version: array = field(default_factory=lambda: array("q"))
    source: list[str] = field(default_factory=list)
    user: list[str] = field(default_factory=list)
    request_id: list[str] = field(default_factory=list)
    value: array = field(default_factory=lambda: array("q"))
    files: list[str] = field(default_factory=list)
    torn_lines: int = 0

    def __len__(self) -> int:
        return len(self.key)

    def operation(self, i: int, t0_ns: int | None = None) -> dict:
        """Operation `i` as a plain dict (for findings' examples)."""
        start, end = self.start_ns[i], self.end_ns[i]
        version = self.version[i]
        record = {
            "key": self.key[i], "op": self.op[i], "start_ns": start,
            "end_ns": None if end == NO_TIME else end, "start_wall": self.start_wall[i],
            "status": self.status[i], "version": None if version == NO_VERSION else version,
            "source": self.source[i], "user": self.user[i], "request_id": self.request_id[i],
        }
        if t0_ns is not None:
            record["t_start"] = round((start - t0_ns) / 1e9, 6)
            record["t_end"] = None if end == NO_TIME else round((end - t0_ns) / 1e9, 6)
        return record


def read_run_history(run_dir: str | Path) -> History:
    """Every `histories/*.tsv` of a run folder, concatenated (empty History if there are none)."""
    return read_histories(RunFolder(run_dir).history_files())


def read_histories(paths: list[Path] | list[str]) -> History:
    history = History()
    interned: dict[str, str] = {}
    with gc_paused():
        for path in paths:
            with damaged(path):
                _read_file(Path(path), history, interned)
    return history


@contextmanager
def gc_paused():
    """Millions of new strings and tuples make the cyclic GC rescan everything again and again;
    these objects hold no cycles, so pause it (a third of the time at 1M operations)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_file(path: Path, history: History, interned: dict[str, str]) -> None:
    with path.open("r", encoding="utf-8", newline="\n") as handle:
        magic = handle.readline().rstrip("\r\n")
        if magic != MAGIC:
            raise CachestormError(f"{path}: first line is {magic[:40]!r}, expected {MAGIC!r}; "
                                  "is this a cachestorm history file?")
        header = handle.readline().rstrip("\r\n").split("\t")
        missing = [name for name in COLUMNS if name not in header]
        if missing:
            raise CachestormError(f"{path}: header lacks column(s) {', '.join(missing)}; "
                                  f"expected {' '.join(COLUMNS)}")
        positions = [header.index(name) for name in COLUMNS]
        width = len(header)
        history.files.append(str(path))
        line_number = 2
        while True:
            # one big split per chunk instead of one per line: columns are then strided slices
            text = handle.read(_CHUNK_CHARS)
            if not text:
                break
            if not text.endswith("\n"):
                text += handle.readline()
                if not text.endswith("\n"):  # torn last line of a run killed mid-write: skip it
                    text = text[: text.rfind("\n") + 1]
                    history.torn_lines += 1
                    if not text:
                        break
            if "\n\n" in text or text.startswith("\n"):
                text = "\n".join(line for line in text.split("\n") if line) + "\n"
            lines = text.count("\n")
            fields = text.replace("\r", "").replace("\n", "\t").split("\t")
            fields.pop()  # after the last newline
            if len(fields) != lines * width:
                _raise_bad_line(path, text, width, line_number)
            _append_columns(history, [fields[c::width] for c in positions], interned, path)
            line_number += lines


def _raise_bad_line(path: Path, text: str, width: int, line_number: int) -> None:
    for offset, line in enumerate(text.splitlines(), 1):
        if line.count("\t") + 1 != width:
            raise CachestormError(f"{path}: line {line_number + offset} has {line.count(chr(9)) + 1} fields, "
                                  f"the header has {width}; the file is damaged or truncated")
    raise CachestormError(f"{path}: near line {line_number}: field count does not match the header")


def _intern(column: list[str], interned: dict[str, str]) -> list[str]:
    """One string object per distinct value: keys, sources and users repeat a lot."""
    return list(map(interned.setdefault, column, column))


def _append_columns(history: History, columns: list[list[str]], interned: dict[str, str], path: Path) -> None:
    key, op, start_ns, end_ns, start_wall, status, version, source, user, request_id, value = columns
    try:
        history.start_ns.extend(map(int, start_ns))
        history.end_ns.extend([int(v) if v else NO_TIME for v in end_ns])
        history.start_wall.extend([float(v) if v else 0.0 for v in start_wall])
        history.version.extend([int(v) if v else NO_VERSION for v in version])
        history.value.extend([int(v) if v else 0 for v in value])
    except ValueError as exc:
        raise CachestormError(f"{path}: a numeric column holds a non-number ({exc}); "
                              "start_ns/end_ns/version/value must be integers") from None
    history.key.extend(_intern(key, interned))
    history.op.extend(map(sys.intern, op))
    history.status.extend(map(sys.intern, status))
    history.source.extend(_intern(source, interned))
    history.user.extend(_intern(user, interned))
    history.request_id.extend(request_id)


def write_history(path: str | Path, operations: list[tuple]) -> Path:
    """Write a history file from tuples in COLUMNS order (None -> empty); for tests and synthetic runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        handle.write(MAGIC + "\n" + "\t".join(COLUMNS) + "\n")
        for operation in operations:
            handle.write("\t".join("" if v is None else str(v) for v in operation) + "\n")
    return path
