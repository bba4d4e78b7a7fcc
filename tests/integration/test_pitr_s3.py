"""Point-in-time recovery from an S3-only repository (real SeaweedFS, real PostgreSQL 18, real WAL).

restore_command reads the repository through a 0600 spec file (vaultflow.stores.spec) that
exists only while recovery runs: the S3 secret must never show in any process's argv or
environment, in the data directory's config, or in any file left behind.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.secret_watch import SecretWatch, files_holding
from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.cluster import stop_cluster
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.recovery import RecoveryTarget, recover
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.engines.postgres.wal import object_key, record_key, ship_spool, wal_fetch
from vaultflow.engines.postgres.wal.cli import fetch_command
from vaultflow.errors import AuthenticationError, ToolError
from vaultflow.manifest import Manifest
from vaultflow.proc import short_temp_root
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore, MirrorStore, spec
from vaultflow.testing.unprivileged import SERVICE_USER, running_as_root

RUN_AS = SERVICE_USER if running_as_root() else None


@dataclass
class S3Pitr:
    repo: Repository
    engine: PostgresEngine
    manifest: Manifest
    t2: datetime
    bucket: str
    secret: str
    work: Path


def server_now(pg) -> datetime:
    return pg.execute("SELECT clock_timestamp()")[0][0]


@pytest.fixture(scope="module")
def s3_pitr(archiving, s3_server):
    """One full backup into S3, then markers t1 < t2 < t3 with their WAL shipped to S3."""
    pg = archiving.pg
    bucket = f"vf-pitr-{int(time.time() * 1000) % 10**9}"
    s3_server.create_bucket(bucket)
    repo = Repository(s3_server.store(bucket, prefix="vault"))
    work = Path(tempfile.mkdtemp(prefix="vfpitr-s3-", dir=short_temp_root()))
    work.chmod(0o711)  # the restored cluster runs as the service user
    target = f"pitrs3{int(time.time() * 1000) % 10**6}"
    pg.execute(
        "DROP TABLE IF EXISTS s3marks; CREATE TABLE s3marks (label text PRIMARY KEY, "
        "at timestamptz DEFAULT clock_timestamp())"
    )
    engine = PostgresEngine(
        PostgresSettings(
            target_name=target,
            host=pg.host,
            port=pg.port,
            user=pg.user,
            mode="physical",
            physical_fingerprints=True,
            bin_dir=str(pg.client_bin_dir),
            server_bin_dir=str(pg.bin_dir),
            restore_os_user=RUN_AS,
        )
    )
    manifest = engine.full_backup(BackupContext(repo))
    pg.execute("INSERT INTO s3marks (label) VALUES ('t1')")
    time.sleep(0.3)
    t2 = server_now(pg)
    time.sleep(0.3)
    pg.execute("INSERT INTO s3marks (label) VALUES ('t3')")
    archiving.wait_archived(archiving.switch())
    shipped = ship_spool(archiving.spool, repo, target)
    assert shipped.shipped, "the WAL after the backup went to S3"
    try:
        yield S3Pitr(repo, engine, manifest, t2, bucket, s3_server.secret_key, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_pitr_to_t2_from_s3_only_repository_keeps_the_secret_private(s3_pitr, archiving):
    dest = s3_pitr.work / "data"
    with SecretWatch(s3_pitr.secret) as watch:
        result, cluster = recover(
            BackupContext(s3_pitr.repo),
            s3_pitr.manifest,
            dest,
            bin_dir=Path(s3_pitr.engine.config.server_bin_dir),
            user=archiving.pg.user,
            target=RecoveryTarget(time=s3_pitr.t2),
            fetch_store=s3_pitr.repo.store,
            wal_cli=archiving.python.command(),
            run_as=RUN_AS,
            keep_running=True,
        )
    try:
        assert not list(s3_pitr.work.glob(".data-wal-fetch-*")), "spec file removed once recovery ended"
        with psycopg.connect(
            host=str(cluster.socket_dir), port=cluster.port, user=archiving.pg.user, dbname="postgres"
        ) as conn:
            labels = [r[0] for r in conn.execute("SELECT label FROM s3marks ORDER BY at")]
    finally:
        stop_cluster(cluster)
    assert labels == ["t1"], "t1 (before t2) is there, t3 (after t2) is not"
    assert result.seconds > 0
    fetches = [c for c in watch.seen if "vaultflow.engines.postgres.wal.cli" in c and "fetch" in c]
    assert fetches and all("--repo-config" in c for c in fetches), "restore_command ran, reading the spec file"
    assert watch.leaks == [], "the secret was in a process's argv or environment"
    auto_conf = (dest / "postgresql.auto.conf").read_text()
    assert "--repo-config" in auto_conf
    assert s3_pitr.secret not in auto_conf and s3_pitr.secret not in (dest / "postgresql.conf").read_text()
    assert files_holding(s3_pitr.secret, [s3_pitr.work], limit=None) == []


def test_wrong_secret_in_restore_command_fails_naming_bucket_and_endpoint(s3_pitr, archiving, s3_server):
    wrong = "wrong-" + s3_pitr.secret[::-1]
    bad_store = s3_server.store(s3_pitr.bucket, prefix="vault", secret_key=wrong)
    dest = s3_pitr.work / "wrong"
    with pytest.raises(ToolError) as info:
        recover(
            BackupContext(s3_pitr.repo),
            s3_pitr.manifest,
            dest,
            bin_dir=Path(s3_pitr.engine.config.server_bin_dir),
            user=archiving.pg.user,
            target=RecoveryTarget(time=s3_pitr.t2),
            fetch_store=bad_store,
            wal_cli=archiving.python.command(),
            run_as=RUN_AS,
            timeout=120,
        )
    message = str(info.value)
    assert message.startswith("restore_command failed, recovery aborted: vaultflow wal-fetch: error"), message
    assert f"s3://{s3_pitr.bucket}/vault" in message and s3_server.endpoint_url in message
    assert "refused the credentials" in message and wrong not in message
    assert not list(s3_pitr.work.glob(".wrong-wal-fetch-*")), "spec file removed after the failure too"
    assert files_holding(wrong, [s3_pitr.work], limit=None) == []


def test_wrong_secret_in_repository_fails_at_once(s3_pitr, s3_server):
    bad = Repository(s3_server.store(s3_pitr.bucket, prefix="vault", secret_key="not-the-secret"))
    with pytest.raises(AuthenticationError) as info:
        s3_pitr.engine.recover(
            BackupContext(bad), s3_pitr.manifest, s3_pitr.work / "never", RecoveryTarget(time=s3_pitr.t2)
        )
    assert s3_pitr.bucket in str(info.value) and s3_server.endpoint_url in str(info.value)


def test_mirror_fetch_reads_local_first_and_falls_back_to_s3(s3_pitr, tmp_path: Path):
    """wal_cli fetch --repo-config with a local+S3 mirror spec: local first (S3 never built),
    S3 when the local member lacks the file; the spec file must be private."""
    target = s3_pitr.engine.config.name
    name = s3_pitr.manifest.consistency.start_wal_file
    local = LocalStore(tmp_path / "local")
    for key in (object_key(target, name), record_key(target, name)):
        with s3_pitr.repo.store.open(key) as stream:
            local.put(key, stream)
    mirror = spec.build(spec.describe(MirrorStore([s3_pitr.repo.store, local])))
    assert isinstance(mirror.stores[0], LocalStore), "the spec lists the local member first"
    assert wal_fetch(name, tmp_path / "from-local", mirror, target)
    assert mirror.stores[1]._store is None, "the local member had it: S3 was never opened"

    config = tmp_path / "repository.json"
    spec.write_spec_file(spec.describe(MirrorStore([local, s3_pitr.repo.store])), config)
    local.delete(record_key(target, name))
    assert fetch_command(name, tmp_path / "from-s3", target=target, repo_config=str(config)) == 0
    assert (tmp_path / "from-s3").read_bytes() == (tmp_path / "from-local").read_bytes()
    assert fetch_command("000000FF0000000000000001", tmp_path / "none", target=target, repo_config=str(config)) == 1
    config.chmod(0o644)
    assert fetch_command(name, tmp_path / "again", target=target, repo_config=str(config)) == 255
