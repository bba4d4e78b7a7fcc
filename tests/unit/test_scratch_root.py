"""Where scratch goes: the suite's TMPDIR on tmpfs (tests/conftest.py) and the short root that
sockets and the servers' service user need (vaultflow.proc.short_temp_root)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from tests.conftest import tmpfs_scratch_root
from vaultflow.proc import SHORT_ROOT_MAX, short_temp_root


def test_the_scratch_root_is_only_taken_on_a_tmpfs_with_room(tmp_path: Path) -> None:
    # A directory that is not a tmpfs mount point (pytest's tmp_path) is never taken.
    assert tmpfs_scratch_root(tmp_path) is None
    shm = Path("/dev/shm")
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    if not any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in mounts if line):
        pytest.fail("this machine has no tmpfs on /dev/shm: the suite's scratch stays on disk", pytrace=False)
    # More free space asked for than the tmpfs has: not taken.
    free = os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize
    assert tmpfs_scratch_root(shm, min_free=free + (1 << 40)) is None
    root = tmpfs_scratch_root(shm, min_free=0)
    assert root == shm / "vaultflow-tests"
    assert stat.S_IMODE(root.stat().st_mode) == 0o1777  # the service user makes its own dirs there


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


def test_a_long_temporary_directory_leaves_sockets_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    short = tmp_path.parent.parent  # pytest-of-<user>: short enough
    long = tmp_path / ("x" * SHORT_ROOT_MAX)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    assert short_temp_root() == "/tmp"
    monkeypatch.setattr(tempfile, "tempdir", str(short))
    assert short_temp_root() == (str(short) if len(str(short)) <= SHORT_ROOT_MAX else "/tmp")
    # A PostgreSQL socket in a mkdtemp dir there fits in sun_path (108 bytes with its NUL).
    socket_path = Path(short_temp_root(), "vfpg-pg18wal-abcdefgh", "s", ".s.PGSQL.65535.lock")
    assert len(os.fsencode(str(socket_path))) < 108
