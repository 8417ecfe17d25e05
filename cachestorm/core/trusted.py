"""Folders whose contents cachestorm runs (as root, or as the unprivileged user it hands servers to) must be
nobody else's: a folder another local user owns, or may write to, lets that user replace a binary we run.

`trusted_dir` creates such a folder (as the running user, never group/other-writable) or checks the one
that is there: it and every folder above it belong to the running user or root and are writable by no one
else, except a sticky folder such as /var/tmp above one of ours (no one else can rename or delete our
entry in it). `check_tree` checks everything inside (binaries, libraries) the same way. A refusal is one
`CachestormError` line naming the culprit.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from cachestorm.core.errors import CachestormError


def _foreign_write(info: os.stat_result) -> int:
    """The group/other write bits of `info` that let someone else write: group write is harmless when the
    group is its owner's own private group with no other members (a umask of 002 makes those)."""
    bits = info.st_mode & 0o022
    if bits & 0o020:
        try:
            gid = info.st_gid
            private = (pwd.getpwuid(info.st_uid).pw_gid == gid and not grp.getgrgid(gid).gr_mem
                       and not any(user.pw_gid == gid and user.pw_uid != info.st_uid for user in pwd.getpwall()))
        except KeyError:
            private = False
        if private:
            bits &= ~0o020
    return bits


def _owner_ok(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def _name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _refuse(what: str, path: Path, why: str, hint: str) -> CachestormError:
    return CachestormError(f"refusing {what} {path}: {why}; another local user could change what cachestorm "
                           f"runs or acts on there{'; ' + hint if hint else ''}")


def check_path(path: str | Path, what: str, hint: str = "", _parent_of_ours: bool = False) -> None:
    """`path` and every folder above it: owned by us or root, not writable by group or others (a sticky
    folder is fine above the leaf, whose entry in it is then ours). Symlinks on the way are checked, then
    followed and the real path checked too."""
    path = Path(os.path.abspath(path))
    chain = [path, *path.parents]
    for index, part in enumerate(chain):
        try:
            info = os.lstat(part)
        except OSError as exc:
            raise _refuse(what, path, f"cannot inspect {part} ({exc.strerror})", hint) from None
        if not _owner_ok(info.st_uid):
            mine = "root" if os.geteuid() == 0 else f"{_name(os.geteuid())} or root"
            raise _refuse(what, path, f"{part} belongs to {_name(info.st_uid)}, not to {mine}", hint)
        if stat.S_ISLNK(info.st_mode):
            continue  # its own mode means nothing; its target is checked below
        if _foreign_write(info):
            sticky_above_ours = (index > 0 or _parent_of_ours) and stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
            if not sticky_above_ours:
                raise _refuse(what, path, f"{part} is writable by {_writers(_foreign_write(info))} (mode "
                                          f"{stat.S_IMODE(info.st_mode):04o})", hint)
    real = Path(os.path.realpath(path))
    if real != path:
        check_path(real, what, hint, _parent_of_ours)


def check_tree(root: str | Path, what: str, hint: str = "") -> None:
    """Every folder, file and symlink under `root` (not `root` itself: see `check_path`): owned by us or
    root, none writable by group or others; a symlink pointing outside `root` has its target checked."""
    root = Path(root)
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            entry = Path(folder) / name
            info = os.lstat(entry)
            if not _owner_ok(info.st_uid):
                raise _refuse(what, root, f"{entry} belongs to {_name(info.st_uid)}", hint)
            if stat.S_ISLNK(info.st_mode):
                target = os.path.realpath(entry)
                if os.path.commonpath([real_root, target]) != real_root and os.path.lexists(target):
                    check_path(target, what, hint)
            elif _foreign_write(info):
                raise _refuse(what, root, f"{entry} is writable by {_writers(_foreign_write(info))} (mode "
                                          f"{stat.S_IMODE(info.st_mode):04o})", hint)


def trusted_dir(path: str | Path, what: str, hint: str = "", mode: int = 0o755) -> Path:
    """Create `path` as ours with `mode` (never group/other-writable) if it is missing, else check it;
    its parents are checked either way. Returns the path."""
    path = Path(path)
    mode &= ~0o022
    if not os.path.lexists(path):
        check_path(path.parent, what, hint, _parent_of_ours=True)  # the folder we make in it is ours
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass  # someone made it meanwhile: the check below decides
        except OSError as exc:
            raise CachestormError(f"cannot create {what} {path}: {exc.strerror}{'; ' + hint if hint else ''}") from None
        else:
            os.chmod(path, mode)  # the umask may have taken bits we need (0755: the unprivileged user reads)
    check_path(path, what, hint)
    return path


def strip_foreign_write(root: str | Path) -> None:
    """Take group/other write off everything under `root` (a copy keeps its source's modes)."""
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            entry = os.path.join(folder, name)
            info = os.lstat(entry)
            if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o022:
                os.chmod(entry, stat.S_IMODE(info.st_mode) & ~0o022)


def _writers(mode: int) -> str:
    return " and ".join(who for who, bit in (("its group", 0o020), ("others", 0o002)) if mode & bit)


def check_own(path: str | Path, what: str, hint: str = "") -> None:
    """`path` (a file or folder) is no one else's: not a symlink, owned by us or root, not writable by group
    or others. For what cachestorm acts on as it says (PIDs to kill, folders to delete): the state under
    `.cachestorm/`; check its folder too. Missing is fine. Unlike `check_path`, the folders above are not
    checked: root may work in a user's checkout."""
    path = Path(path)
    for part in (path,):
        try:
            info = os.lstat(part)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            raise _refuse(what, path, f"{part} is a symlink", hint)
        if not _owner_ok(info.st_uid):
            raise _refuse(what, path, f"{part} belongs to {_name(info.st_uid)}", hint)
        if _foreign_write(info):
            raise _refuse(what, path, f"{part} is writable by {_writers(_foreign_write(info))} (mode "
                                      f"{stat.S_IMODE(info.st_mode):04o})", hint)
