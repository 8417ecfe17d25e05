"""Checks of the paths a command writes to, before it computes or starts anything: one line each
(a folder given for a file, a missing or unwritable parent, a name too long), never a traceback."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cachestorm.core.errors import CachestormError


def _too_long(path: Path, flag: str) -> None:
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise CachestormError(f"{flag} {str(path)[:60]}...: a name in it is longer than 255 bytes; give a shorter path")
    if len(os.fsencode(str(path))) >= 4096:
        raise CachestormError(f"{flag} {str(path)[:60]}...: the path is longer than 4095 bytes; give a shorter one")


def _stat(path: Path, flag: str):
    try:
        return path.stat()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise CachestormError(f"{flag} {path}: a file is in the way in its path; give a folder path") from None
    except OSError as exc:
        raise CachestormError(f"{flag} {path}: cannot use it ({exc.strerror})") from None


def check_output_file(path: str | Path, flag: str) -> Path:
    """A file this command will write: not a folder, in an existing folder it can write to (checked by
    creating and removing a probe file there; an existing file is opened for appending, not changed)."""
    path = Path(path)
    _too_long(path, flag)
    existing = _stat(path, flag)
    if existing is not None and path.is_dir():
        raise CachestormError(f"{flag} {path}: is a folder; give a file name, e.g. {path / 'out'}")
    parent = path.parent
    parent_stat = _stat(parent, flag)
    if parent_stat is None:
        raise CachestormError(f"{flag} {path}: its folder {parent} does not exist; create it or give another path")
    if not parent.is_dir():
        raise CachestormError(f"{flag} {path}: {parent} is not a folder")
    try:
        if existing is not None:
            with open(path, "ab"):
                pass
        else:
            fd, probe = tempfile.mkstemp(dir=parent, prefix=".cachestorm-probe-")
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise CachestormError(f"{flag} {path}: cannot write there ({exc.strerror}); give a path you can write to") from None
    return path


def check_output_folder(path: str | Path, flag: str) -> Path:
    """A folder this command will create (with its parents) or write into: no file in the way, and its
    nearest existing ancestor a folder it can write to (checked by creating and removing a probe folder)."""
    path = Path(path)
    _too_long(path.absolute(), flag)
    ancestor = path
    while _stat(ancestor, flag) is None and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CachestormError(f"{flag} {path}: {'it' if ancestor == path else ancestor} is a file, not a folder; "
                              "give a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".cachestorm-probe-"))
    except OSError as exc:
        raise CachestormError(f"{flag} {path}: cannot write in {ancestor} ({exc.strerror}); "
                              "give a folder you can write to") from None
    return path


def check_input_path(path: str | Path, flag: str) -> Path:
    """A path this command reads: a name it can look up (not too long), one line if it cannot."""
    path = Path(path)
    _too_long(path, flag)
    _stat(path, flag)
    return path
