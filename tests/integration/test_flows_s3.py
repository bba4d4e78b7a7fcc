"""Backups into S3 (SeaweedFS) and into a local+S3 mirror, through the flows and the blocks."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect_aws import AwsClientParameters, AwsCredentials
from prefect_aws.s3 import S3Bucket
from pydantic import SecretStr

from vaultflow.blocks import BackupRepository, PostgresTarget
from vaultflow.errors import AuthenticationError, IntegrityError, NotFoundError
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.restore import restore
from vaultflow.flows.verify import verify

pytestmark = pytest.mark.usefixtures("prefect_api")


def s3_block(s3, bucket: str, secret: str | None = None, folder: str = "vf") -> S3Bucket:
    creds = AwsCredentials(
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=SecretStr(secret or s3.secret_key),
        region_name=s3.region,
        aws_client_parameters=AwsClientParameters(endpoint_url=s3.endpoint_url),
    )
    return S3Bucket(bucket_name=bucket, credentials=creds, bucket_folder=folder)


@pytest.fixture
def target(pg18, fresh_db):
    db = fresh_db(pg18)
    pg18.execute(
        "CREATE TABLE t (id int PRIMARY KEY, payload text); INSERT INTO t "
        "SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 3000) g",
        dbname=db,
    )
    return PostgresTarget(
        host=pg18.host,
        port=pg18.port,
        user=pg18.user,
        databases=[db],
        target_name=f"s3{db[-6:]}",
        bin_dir=str(pg18.client_bin_dir),
    )


def test_backup_and_restore_through_s3(target, s3_server, s3_bucket, pg18):
    repository = BackupRepository(s3_bucket=s3_block(s3_server, s3_bucket))
    backup = full_backup(target=target, repository=repository)
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert f"vf/postgres/{target.name}/backups/{backup['backup_id']}/manifest.json" in keys
    db = target.databases[0]
    result = restore(target=target, repository=repository, into=f"{db}_from_s3")
    try:
        assert [r["status"] for r in result["comparison"]] == [
            "match",
            "match",
        ]  # the table and the database properties
        assert pg18.execute("SELECT count(*) FROM t", dbname=f"{db}_from_s3") == [(3000,)]
    finally:
        pg18.execute(f'DROP DATABASE IF EXISTS "{db}_from_s3" WITH (FORCE)')


def test_mirror_writes_both_and_verify_checks_each_copy(target, s3_server, s3_bucket, tmp_path: Path, pg18):
    repository = BackupRepository(local_path=str(tmp_path / "repo"), s3_bucket=s3_block(s3_server, s3_bucket))
    backup = full_backup(target=target, repository=repository)
    local_manifest = tmp_path / "repo/postgres" / target.name / "backups" / backup["backup_id"] / "manifest.json"
    assert local_manifest.exists()
    s3_key = f"vf/postgres/{target.name}/backups/{backup['backup_id']}/manifest.json"
    assert s3_server.client().get_object(Bucket=s3_bucket, Key=s3_key)["Body"].read() == local_manifest.read_bytes()
    assert verify(repository=repository, target=target)["problems"] == []

    # Lose the local copy of the dump: restore still works from S3, verify names the bad copy.
    dump = local_manifest.parent / "db" / f"{target.databases[0]}.dump.zst"
    dump.unlink()
    db = target.databases[0]
    result = restore(target=target, repository=repository, into=f"{db}_mirror")
    pg18.execute(f'DROP DATABASE IF EXISTS "{db}_mirror" WITH (FORCE)')
    assert [r["status"] for r in result["comparison"]] == ["match", "match"]  # the table and the database properties
    with pytest.raises(IntegrityError, match=r"missing from local:"):
        verify(repository=repository, target=target)


def test_missing_bucket_and_wrong_credentials_are_clear(target, s3_server, s3_bucket):
    missing = BackupRepository(s3_bucket=s3_block(s3_server, "no-such-bucket-vf"))
    with pytest.raises(NotFoundError, match="no-such-bucket-vf"):
        full_backup(target=target, repository=missing)
    wrong = BackupRepository(s3_bucket=s3_block(s3_server, s3_bucket, secret="wrong-secret-value"))
    with pytest.raises(AuthenticationError) as excinfo:
        full_backup(target=target, repository=wrong)
    assert "wrong-secret-value" not in str(excinfo.value)
