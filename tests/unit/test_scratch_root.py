"""Where scratch goes: the suite's TMPDIR on tmpfs (tests/conftest.py) and the short root that
sockets and the servers' service user need (vaultflow.proc.short_temp_root)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from tests.conftest import claim_scratch_dir, tmpfs_mount_options, tmpfs_scratch_root
from vaultflow.proc import SHORT_ROOT_MAX, short_temp_root


def test_the_scratch_root_is_only_taken_on_a_tmpfs_with_room(tmp_path: Path) -> None:
    # A directory that is not a tmpfs mount point (pytest's tmp_path) is never taken.
    assert tmpfs_scratch_root(tmp_path) is None
    shm = Path("/dev/shm")
    options = tmpfs_mount_options(shm)
    if options is None or "noexec" in options:
        assert tmpfs_scratch_root(shm, min_free=0) is None  # no usable tmpfs: the default TMPDIR
        return
    # More free space asked for than the tmpfs (or the memory behind it) has: not taken.
    free = os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize
    assert tmpfs_scratch_root(shm, min_free=free + (1 << 40)) is None
    root = shm / "vaultflow-tests"
    if root.exists() and root.lstat().st_uid != os.geteuid():
        assert tmpfs_scratch_root(shm, min_free=0) is None  # another user's: left alone
        return
    assert tmpfs_scratch_root(shm, min_free=0) == root
    assert stat.S_IMODE(root.stat().st_mode) == 0o1777  # the service user makes its own dirs there


def test_a_link_or_a_file_in_the_scratch_roots_place_is_not_claimed(tmp_path: Path) -> None:
    """Only a directory of ours: a symlink there (to a directory of ours) is neither followed nor
    made 1777, and a file there is no root."""
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(target)
    assert claim_scratch_dir(tmp_path / "link") is False
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    (tmp_path / "file").write_text("")
    assert claim_scratch_dir(tmp_path / "file") is False
    assert claim_scratch_dir(tmp_path / "new") is True  # made, and shared like /tmp
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o1777


def test_the_suite_runs_in_its_scratch_root(tmp_path: Path) -> None:
    """conftest set TMPDIR before pytest made its basetemp (or the caller chose one): this test's
    files are there, and on a machine with a roomy tmpfs and no TMPDIR of the caller's, on tmpfs."""
    chosen = os.environ.get("VAULTFLOW_TEST_SCRATCH")
    assert tempfile.gettempdir() == os.environ.get("TMPDIR", tempfile.gettempdir())
    assert tmp_path.is_relative_to(tempfile.gettempdir())
    if chosen is not None:
        assert chosen == "/dev/shm/vaultflow-tests" == tempfile.gettempdir()
    else:  # not chosen: only because the caller set TMPDIR, or there is no roomy tmpfs
        assert "TMPDIR" in os.environ or tmpfs_scratch_root() is None


def test_a_long_or_private_temporary_directory_leaves_sockets_in_tmp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    long = Path("/dev/shm") / ("x" * SHORT_ROOT_MAX)  # others may enter, but too long
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    assert short_temp_root() == "/tmp"
    private = tmp_path / "p"  # short enough? not the point: pytest's tmp dirs are 0700
    private.mkdir(mode=0o700)
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    assert short_temp_root() == "/tmp"
    shared = Path(tempfile.mkdtemp(dir="/dev/shm"))  # a short one others may enter: taken
    try:
        shared.chmod(0o1777)
        monkeypatch.setattr(tempfile, "tempdir", str(shared))
        assert short_temp_root() == str(shared)
    finally:
        shared.rmdir()


def test_a_socket_fits_in_sun_path_under_the_longest_short_root() -> None:
    """The worst case: a root of SHORT_ROOT_MAX bytes, the longest mkdtemp name a test server
    gives its directory (vfpg- and 16 bytes of name, 8 random), PostgreSQL's lock file name."""
    root = "/" + "r" * (SHORT_ROOT_MAX - 1)
    longest = f"{root}/vfpg-{'n' * 16}-abcdefgh/s/.s.PGSQL.65535.lock"
    assert len(longest.encode()) < 108  # sun_path, NUL included (unix(7))
