"""Repository spec files for restore_command (vaultflow.stores.spec): no server involved."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from vaultflow.engines.postgres.recovery import default_fetch_command
from vaultflow.errors import ConfigError
from vaultflow.stores import LocalStore, spec


def test_local_spec_round_trip(tmp_path: Path) -> None:
    described = spec.describe(LocalStore(tmp_path / "repo"))
    assert described == {"kind": "local", "path": str(tmp_path / "repo")}
    assert spec.build(described).root == tmp_path / "repo"


def test_mirror_builds_local_first_and_s3_lazily(tmp_path: Path) -> None:
    mirror = spec.build(
        {
            "kind": "mirror",
            "members": [
                {"kind": "s3", "bucket": "b", "prefix": "vf/", "endpoint": "http://127.0.0.1:9"},
                {"kind": "local", "path": str(tmp_path)},
            ],
        }
    )
    assert isinstance(mirror.stores[0], LocalStore)
    assert mirror.stores[1].description == "s3://b/vf" and mirror.stores[1]._store is None


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"kind": "ftp"}, "kind must be one of"),
        ({"kind": "local"}, "needs 'path'"),
        ({"kind": "mirror", "members": []}, "non-empty list"),
    ],
)
def test_bad_specs_are_config_errors(bad: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        spec.build(bad, where="repository spec file /x.json")


def test_spec_file_is_private_and_removed(tmp_path: Path) -> None:
    with spec.spec_file(LocalStore(tmp_path / "repo"), tmp_path, prefix=".data-wal-fetch-") as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert path.parent.parent == tmp_path and path.parent.name.startswith(".data-wal-fetch-")
        assert spec.read_spec_file(path)["kind"] == "local"
    assert not path.parent.exists()
    with pytest.raises(RuntimeError):
        with spec.spec_file(LocalStore(tmp_path / "repo"), tmp_path) as path:
            raise RuntimeError("recovery failed")
    assert not path.parent.exists(), "removed on failure too"


def test_spec_memfd_is_read_by_a_child_through_dev_fd_and_is_no_file(tmp_path: Path) -> None:
    """restore_command (a child of the restored server) reads the inherited memfd as /dev/fd/N;
    it exists on no filesystem, so a killed restore leaves no file with the secret."""
    import os
    import subprocess
    import sys

    store = LocalStore(tmp_path / "repo")
    read = "import sys; from vaultflow.stores import spec; print(spec.read_spec_file(sys.argv[1])['path'])"
    with spec.spec_memfd(store) as fd:
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
        for _ in range(2):  # every WAL file's restore_command reads it again, from the start
            out = subprocess.run(
                [sys.executable, "-c", read, f"/dev/fd/{fd}"],
                pass_fds=(fd,),
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).parents[2],
            )
            assert out.stdout.strip() == str(tmp_path / "repo")
        held = os.dup(fd)
    try:
        assert os.fstat(held).st_size == 0, "emptied on exit: a server still holding it reads nothing"
    finally:
        os.close(held)
    with pytest.raises(OSError):
        os.fstat(fd)


def test_read_spec_file_refuses_readable_or_missing_files(tmp_path: Path) -> None:
    path = spec.write_spec_file({"kind": "local", "path": "/srv"}, tmp_path / "r.json")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others.*chmod 600"):
        spec.read_spec_file(path)
    with pytest.raises(ConfigError, match="does not exist.*deletes it when the recovery"):
        spec.read_spec_file(tmp_path / "gone.json")
    with pytest.raises(FileExistsError):  # O_EXCL: never writes through an existing file
        spec.write_spec_file({"kind": "local", "path": "/srv"}, path)


def test_default_fetch_command_names_the_file_not_the_secret() -> None:
    cmd = default_fetch_command(
        None,
        "prod",
        repo_config=Path("/r/.d-wal-fetch-x/repository.json"),
        wal_cli="/opt/py -m vaultflow.engines.postgres.wal.cli",
    )
    assert (
        cmd
        == "/opt/py -m vaultflow.engines.postgres.wal.cli fetch --repo-config /r/.d-wal-fetch-x/repository.json --target=prod"
    )
    assert "--repo-path /srv/backups" in default_fetch_command(Path("/srv/backups"), "prod")
    with pytest.raises(ValueError):
        default_fetch_command(None, "prod")
