"""Continuous WAL archiving with a real PostgreSQL 18: archive_command = the real wal-push.

The server runs as the service user when we are root, and so does its archive_command:
`service_user_python()` finds an interpreter that user can run with vaultflow importable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.fixtures.wal import ArchivingServer, sha256
from vaultflow.engines.postgres.wal import (
    archived_names,
    check_continuity,
    read_record,
    ship_spool,
    spooled,
    wal_fetch,
    wal_order,
)
from vaultflow.errors import StoreUnavailableError, VaultflowError, is_transient
from vaultflow.proc import short_temp_root
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore, S3Store
from vaultflow.testing.postgres_server import (
    embedded_bin_dir,
    running_postgres,
)
from vaultflow.testing.service_python import ServicePython
from vaultflow.testing.unprivileged import (
    free_port,
    give_to_service_user,
)

TARGET = "pg18wal"
SEGMENT = 16 << 20


# -- a server whose archive_command spools into a directory ----------------------------------
def unreachable_s3() -> S3Store:
    from botocore.config import Config

    from vaultflow.stores.s3 import boto3_session

    client = boto3_session().client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1),
    )
    return S3Store(client, "wal-bucket")


# -- tests -----------------------------------------------------------------------------------
def test_archive_ship_and_fetch_real_wal(archiving: ArchivingServer, tmp_path: Path) -> None:
    ship_spool(archiving.spool, Repository(LocalStore(tmp_path / "earlier")), TARGET)  # other tests' WAL
    names = archiving.make_segments(3)
    archiving.wait_archived(names[-1])
    archived = archiving.spooled_digests()
    assert set(names) <= set(archived)
    assert archiving.archiver()["failed_count"] == 0
    pg_wal = archiving.pg.data_dir / "pg_wal"
    compared = [n for n in names if (pg_wal / n).exists()]
    assert compared, "PostgreSQL recycled every segment before we could compare"
    for name in compared:  # the spool holds exactly what the server wrote
        assert sha256(pg_wal / name) == archived[name]
        assert (pg_wal / name).stat().st_size == SEGMENT

    repo = Repository(LocalStore(tmp_path / "repo"))
    result = ship_spool(archiving.spool, repo, TARGET)

    assert result.shipped == sorted(archived, key=wal_order)
    assert (result.remaining, result.lag_segments, result.lag_seconds) == (0, 0, 0.0)
    assert spooled(archiving.spool) == []
    assert result.raw_bytes == SEGMENT * len(archived) and result.stored_bytes < result.raw_bytes
    for name, digest in archived.items():
        record = read_record(repo, TARGET, name)
        assert record is not None and record["raw_sha256"] == digest and record["raw_size"] == SEGMENT
    assert check_continuity(repo, TARGET, min(archived)) == []

    dest = tmp_path / "RECOVERYXLOG"
    assert wal_fetch(names[1], dest, repo, TARGET)
    assert sha256(dest) == archived[names[1]]


def test_archiving_goes_on_while_the_repository_is_unreachable(archiving: ArchivingServer, tmp_path: Path) -> None:
    ship_spool(archiving.spool, Repository(LocalStore(tmp_path / "earlier")), TARGET)  # start empty
    first = archiving.make_segments(2)
    archiving.wait_archived(first[-1])
    blocker = tmp_path / "a-file"
    blocker.write_text("the repository's parent is a regular file")
    broken_local = Repository(LocalStore(blocker / "repo"))

    before = archiving.spooled_digests()
    with pytest.raises(VaultflowError, match=min(before)) as caught:
        ship_spool(archiving.spool, broken_local, TARGET)
    assert caught.value.ship_result.shipped == []  # type: ignore[attr-defined]
    assert archiving.spooled_digests() == before

    more = archiving.make_segments(2)  # the server keeps archiving meanwhile
    archiving.wait_archived(more[-1])
    with pytest.raises(StoreUnavailableError, match=min(before)) as unreachable:
        ship_spool(archiving.spool, unreachable_s3(), TARGET)
    assert is_transient(unreachable.value)
    assert caught.value.ship_result.lag_segments >= 2  # type: ignore[attr-defined]
    assert archiving.archiver()["failed_count"] == 0
    waiting = archiving.spooled_digests()
    assert set(before) < set(waiting) and set(first + more) <= set(waiting)

    repo = Repository(LocalStore(tmp_path / "repo"))  # reachable again
    result = ship_spool(archiving.spool, repo, TARGET)
    assert result.shipped == sorted(waiting, key=wal_order)
    assert spooled(archiving.spool) == []
    assert archived_names(repo, TARGET) == sorted(waiting, key=wal_order)
    assert check_continuity(repo, TARGET, min(waiting)) == []
    for name, digest in waiting.items():
        assert read_record(repo, TARGET, name)["raw_sha256"] == digest  # type: ignore[index]


def test_wal_push_as_the_service_user_spools_every_segment(service_python: ServicePython) -> None:
    """The archive_command as the server runs it: the service user, the same interpreter, 20
    segments of 16 MiB, each in the spool with its bytes. (Its latency is measured by `make
    bench`, bench/physical.py, beside the stock tools: a test asserts no timings.)"""
    work = Path(tempfile.mkdtemp(prefix="vfwal-push-", dir=short_temp_root()))
    try:
        source_dir, spool = work / "pg_wal", work / "spool"
        source_dir.mkdir()
        template = source_dir / "template"
        template.write_bytes(os.urandom(SEGMENT))
        names = [f"0000000900000000000000{n:02X}" for n in range(20)]
        for name in names:
            os.link(template, source_dir / name)
        give_to_service_user(work)
        for name in names:
            result = service_python.run_as_service_user(
                "-m", "vaultflow.engines.postgres.wal.cli", "push", str(source_dir / name), "--spool", str(spool)
            )
            assert result.returncode == 0, result.stderr
        assert sorted(os.listdir(spool)) == names
        assert {sha256(spool / name) for name in names} == {sha256(template)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_point_in_time_recovery_through_restore_command(
    archiving: ArchivingServer, service_python: ServicePython, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """pg_basebackup without WAL + restore_command = wal-fetch: the rows written after the
    backup come back from the archive; a corrupt archived segment aborts recovery instead of
    ending it early (which would silently drop those rows)."""
    pg = archiving.pg
    work = Path(tempfile.mkdtemp(prefix="vfpitr-", dir=short_temp_root()))  # the service user reads the repository
    try:
        repo_root, base_backup = work / "repo", work / "base"
        repo = Repository(LocalStore(repo_root))
        ship_spool(archiving.spool, repo, TARGET)
        subprocess.run(
            [str(pg.client_bin_dir / "pg_basebackup"), "-D", str(base_backup), "-X", "none", "-c", "fast", "--no-sync"],
            env={**os.environ, **pg.libpq_env()},
            check=True,
            capture_output=True,
        )  # -X none: waits until its WAL is archived
        pg.execute("CREATE TABLE after_backup AS SELECT g AS id FROM generate_series(1, 5000) g")
        last = archiving.make_segments(1)[-1]  # more rows in t, then a switch
        expected = pg.execute("SELECT count(*) FROM t")[0][0]
        archiving.wait_archived(last)
        ship_spool(archiving.spool, repo, TARGET)
        give_to_service_user(work)

        fetch = service_python.command("fetch", "%f", "%p", "--repo-path", str(repo_root), "--target", TARGET)
        restored = running_postgres(
            embedded_bin_dir(), tmp_path_factory.mktemp("pgpitr"), name="pgpitr", settings={"restore_command": fetch}
        )
        with restored as copy:

            def recover_from_base_backup() -> None:
                copy.stop()
                shutil.rmtree(copy.data_dir)
                shutil.copytree(base_backup, copy.data_dir, symlinks=True)
                (copy.data_dir / "recovery.signal").touch()
                os.chmod(copy.data_dir, 0o700)
                give_to_service_user(copy.data_dir)
                copy.restart()

            zst = repo_root / "postgres" / TARGET / "logs" / "wal" / f"{last}.zst"
            good = zst.read_bytes()
            rotten = bytearray(good)
            rotten[len(rotten) // 2] ^= 0xFF
            zst.write_bytes(bytes(rotten))
            with pytest.raises(RuntimeError, match="aborting recovery") as aborted:
                recover_from_base_backup()
            assert last in str(aborted.value)

            zst.write_bytes(good)
            recover_from_base_backup()
            deadline = time.monotonic() + 60
            while copy.execute("SELECT pg_is_in_recovery()")[0][0]:
                assert time.monotonic() < deadline, f"still recovering; see {copy.log_file}"
                time.sleep(0.1)
            assert copy.execute("SELECT count(*) FROM t")[0][0] == expected
            assert copy.execute("SELECT count(*) FROM after_backup")[0][0] == 5000
            log = copy.log_file.read_text()
            assert f'restored log file "{last}" from archive' in log
    finally:
        shutil.rmtree(work, ignore_errors=True)
