"""The upload flow: back up locally, then send to S3 (SeaweedFS); the copy restores from S3.

Interrupted uploads resume (intact objects are not sent again, corrupt or missing ones are),
and a source object that does not match its manifest is refused by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.corpus.oracle import assert_pg_restored
from tests.fixtures.prefect_runs import task_runs_of
from tests.integration.test_flows_s3 import s3_block
from vaultflow.blocks import BackupRepository, PostgresTarget
from vaultflow.errors import IntegrityError, NotFoundError
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.restore import restore
from vaultflow.flows.upload import upload
from vaultflow.flows.verify import verify

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def target(pg18, fresh_db):
    names = [fresh_db(pg18) for _ in range(3)]
    for i, db in enumerate(names):
        pg18.execute(
            "CREATE TABLE t (id int PRIMARY KEY, payload text); INSERT INTO t "
            f"SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, {1000 * (i + 1)}) g",
            dbname=db,
        )
    return PostgresTarget(
        host=pg18.host,
        port=pg18.port,
        user=pg18.user,
        databases=names,
        target_name=f"up{names[0][-6:]}",
        bin_dir=str(pg18.client_bin_dir),
    )


def s3_keys(s3_server, bucket: str) -> dict[str, int]:
    listing = s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: o["Size"] for o in listing}


def test_upload_local_to_s3_and_restore_the_copy(target, s3_server, s3_bucket, pg18, tmp_path: Path):
    local = BackupRepository(local_path=str(tmp_path / "local"))
    offsite = BackupRepository(s3_bucket=s3_block(s3_server, s3_bucket))
    backup = full_backup(target=target, repository=local)
    state = upload(source=local, destination=offsite, return_state=True)
    result = state.result()
    assert result["copied"] == [backup["backup_id"]] and result["objects_sent"] == 4
    assert result["bytes_sent"] == backup["stored_size"]
    prefix = f"vf/postgres/{target.name}/backups/{backup['backup_id']}/"
    local_dir = tmp_path / "local/postgres" / target.name / "backups" / backup["backup_id"]
    manifest = s3_server.client().get_object(Bucket=s3_bucket, Key=prefix + "manifest.json")["Body"].read()
    assert json.loads(manifest) == json.loads((local_dir / "manifest.json").read_bytes())
    runs = task_runs_of(state.state_details.flow_run_id, 1)
    assert [r.name for r in runs] == [f"upload-{backup['backup_id']}"]

    assert verify(repository=offsite, target=target)["problems"] == []
    db = target.databases[1]
    copy = f"{db}_from_offsite"
    try:
        restored = restore(target=target, repository=offsite, backup_id=backup["backup_id"], databases=[db], into=copy)
        assert [r["status"] for r in restored["comparison"]] == ["match", "match"]
        assert_pg_restored(pg18, db, pg18, copy)
    finally:
        pg18.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')

    again = upload(source=local, destination=offsite)
    assert again["copied"] == [] and again["objects_sent"] == 0, "nothing new to send"


def test_interrupted_upload_resumes_and_repairs_bad_copies(target, s3_server, s3_bucket, tmp_path: Path):
    local = BackupRepository(local_path=str(tmp_path / "local"))
    offsite = BackupRepository(s3_bucket=s3_block(s3_server, s3_bucket))
    backup = full_backup(target=target, repository=local)
    first, second, third = target.databases
    local_dir = tmp_path / "local/postgres" / target.name / "backups" / backup["backup_id"]
    prefix = f"vf/postgres/{target.name}/backups/{backup['backup_id']}/"

    # The upload dies at the last dump (gone from the source while it runs): the objects before it
    # are at the destination, the manifest is not, so the backup does not exist there.
    last = local_dir / "db" / f"{third}.dump.zst"
    aside = last.rename(tmp_path / "aside")
    with pytest.raises(NotFoundError):
        upload(source=local, destination=offsite, target=target)
    keys = s3_keys(s3_server, s3_bucket)
    assert set(keys) == {prefix + "globals.sql.zst", prefix + f"db/{first}.dump.zst", prefix + f"db/{second}.dump.zst"}
    assert offsite.build().catalog("postgres", target.name).manifests == []
    aside.rename(last)

    # Meanwhile one copy was damaged (same size, other bytes) and one lost.
    client = s3_server.client()
    damaged = bytearray(client.get_object(Bucket=s3_bucket, Key=prefix + f"db/{first}.dump.zst")["Body"].read())
    damaged[len(damaged) // 2] ^= 0xFF
    client.put_object(Bucket=s3_bucket, Key=prefix + f"db/{first}.dump.zst", Body=bytes(damaged))
    client.delete_object(Bucket=s3_bucket, Key=prefix + f"db/{second}.dump.zst")

    resumed = upload(source=local, destination=offsite, target=target, backup_id=backup["backup_id"])
    assert resumed["copied"] == [backup["backup_id"]]
    assert resumed["objects_skipped"] == 1, "the intact globals were not sent again"
    assert resumed["objects_sent"] == 3, "the damaged, the lost and the never-sent dump"
    assert verify(repository=offsite, target=target)["problems"] == []
    for name in ("globals.sql.zst", f"db/{first}.dump.zst", f"db/{second}.dump.zst", f"db/{third}.dump.zst"):
        body = client.get_object(Bucket=s3_bucket, Key=prefix + name)["Body"].read()
        assert body == (local_dir / name).read_bytes(), name


def test_upload_refuses_a_source_object_that_does_not_match_its_manifest(target, s3_server, s3_bucket, tmp_path: Path):
    local = BackupRepository(local_path=str(tmp_path / "local"))
    offsite = BackupRepository(s3_bucket=s3_block(s3_server, s3_bucket))
    backup = full_backup(target=target, repository=local)
    db = target.databases[0]
    dump = tmp_path / "local/postgres" / target.name / "backups" / backup["backup_id"] / "db" / f"{db}.dump.zst"
    data = bytearray(dump.read_bytes())
    data[len(data) // 3] ^= 0x01
    dump.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"object db/{db}\.dump\.zst of backup {backup['backup_id']}"):
        upload(source=local, destination=offsite, backup_id=backup["backup_id"])
    keys = s3_keys(s3_server, s3_bucket)
    assert not any(k.endswith((f"db/{db}.dump.zst", "manifest.json")) for k in keys), keys
    with pytest.raises(IntegrityError, match=f"db/{db}.dump.zst"):
        verify(repository=local, target=target)  # and verify of the source says the same
