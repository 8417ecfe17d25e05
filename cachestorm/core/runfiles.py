"""Read plain files (JSON, JSON lines, CSV) with one line naming a damaged one; which files a run folder
holds, and where, is core.runfolder.RunFolder's."""

from __future__ import annotations

import csv
import io
import json
from contextlib import contextmanager
from pathlib import Path

from cachestorm.core.errors import CachestormError

# what unexpected content raises as it is parsed or used (a string where a number was, a list for an
# object, binary for text, a broken histogram encoding: hdrh's codec errors are plain Exceptions)
DAMAGE = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, ZeroDivisionError)


def _hdr_errors() -> tuple[type[BaseException], ...]:
    import zlib

    from hdrh import codec

    return (zlib.error, codec.HdrCookieException, codec.HdrLengthException, codec.HdrHistogramSettingsException)


@contextmanager
def damaged(path: str | Path, what: str = ""):
    """Reading (and using) `path`: content of the wrong shape becomes one line naming the file."""
    try:
        yield
    except CachestormError:
        raise
    except DAMAGE + _hdr_errors() as exc:
        detail = " ".join(f"{exc.__class__.__name__}: {exc}".split())[:160]
        damage = "" if Path(path).is_dir() else "; the file is damaged"
        raise CachestormError(f"{path}: {what or 'unexpected content'} ({detail}){damage}") from None


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise CachestormError(f"{path}: not text (binary data where UTF-8 was expected); the file is damaged") from None


def read_json(path: str | Path, default=None):
    path = Path(path)
    if not path.exists():
        return {} if default is None else default
    try:
        data = json.loads(read_text(path))
    except CachestormError:
        raise
    except ValueError as exc:
        raise CachestormError(f"{path}: not valid JSON ({exc}); was the run interrupted while writing it?") from None
    if not isinstance(data, dict):
        raise CachestormError(f"{path}: expected a JSON object, found {type(data).__name__}; the file is damaged")
    return data


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSON-lines file; a torn last line (a run killed mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = read_text(path).splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            raise CachestormError(f"{path}: line {number} is not JSON; the file is damaged") from None
        if not isinstance(record, dict):
            raise CachestormError(f"{path}: line {number} is not a JSON object; the file is damaged")
        records.append(record)
    return records


def iter_jsonl(path: str | Path):
    """read_jsonl's records one at a time, the file read line by line (a long run's metrics are never all
    in memory as text or as dicts); the same torn-last-line rule and the same damage messages."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as handle:
        number, pending = 0, None
        for raw in handle:
            number += 1
            if pending is not None:
                yield _jsonl_record(path, *pending, last=False)
                pending = None
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise CachestormError(f"{path}: not text (binary data where UTF-8 was expected); "
                                      "the file is damaged") from None
            if line.strip():
                pending = (number, line)
        if pending is not None:
            record = _jsonl_record(path, *pending, last=True)
            if record is not None:
                yield record


def _jsonl_record(path: Path, number: int, line: str, *, last: bool) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        if last:
            return None
        raise CachestormError(f"{path}: line {number} is not JSON; the file is damaged") from None
    if not isinstance(record, dict):
        raise CachestormError(f"{path}: line {number} is not a JSON object; the file is damaged")
    return record


def read_csv(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    with damaged(path, "not a CSV table"):
        return list(csv.DictReader(io.StringIO(read_text(path), newline="")))


def first_failure(journal: list[dict]) -> dict | None:
    """The first step that did not end well (failed, interrupted, Locust's bad exit, a hypothesis not
    verified for want of data), or None."""
    for record in journal:
        outcome = str(record.get("outcome"))
        if outcome in ("failed", "interrupted", "revert_failed", "not_verified") or outcome.startswith("exit "):
            return {"what": record.get("what"), "kind": record.get("kind"), "outcome": outcome,
                    "error": (record.get("details") or {}).get("error")}
    return None


def incomplete(run: dict) -> str | None:
    """Why a run's numbers cover only part of it ("failed: start targets: ..."), or None if it ended ok.
    Analyses made before runs recorded an outcome count as complete."""
    outcome = run.get("outcome", "ok")
    if outcome == "ok":
        return None
    failure = run.get("failure") or {}
    step = f": {failure.get('what')}" if failure.get("what") else ""
    error = f": {failure['error']}" if failure.get("error") else ""
    return f"{outcome or 'unknown'}{step}{error}"

