"""archive-logs, verify and prune through the flows on a MongoDB target: the generic flows find the
oplog archive in the engine registry and ship, check and prune it, next to full backups."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.corpus.oracle import mongo_differences, mongo_state
from tests.integration.test_flows import last_run_message
from vaultflow.blocks import BackupRepository, MongoTarget
from vaultflow.engines.mongodb.client import newest_oplog_ts
from vaultflow.engines.mongodb.consistency import ts_text
from vaultflow.engines.mongodb.oplog_archive import OplogArchive
from vaultflow.errors import IntegrityError
from vaultflow.flows.archive_logs import archive_logs
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.prune import prune
from vaultflow.flows.restore import restore
from vaultflow.flows.verify import verify
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.mongo_server import MongoProcess, running_mongo

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(scope="module")
def server() -> Iterator[MongoProcess]:
    with running_mongo("oplog-flows") as process:
        yield process


def test_archive_logs_verify_and_prune_a_mongodb_targets_oplog(server: MongoProcess, tmp_path: Path):
    db = "flow_app"
    client = server.client()
    target = MongoTarget(
        host=server.host,
        port=server.port,
        databases=[db],
        oplog_slice_seconds=1,
        oplog_slice_bytes=16 << 10,
        target_name="oplogflow",
    )
    repository = BackupRepository(
        local_path=str(tmp_path / "repo"), keep_last=1, keep_daily=None, keep_weekly=None, keep_monthly=None
    )
    archive = OplogArchive(Repository(LocalStore(tmp_path / "repo")), "oplogflow")
    try:
        client[db].orders.insert_many([{"_id": i, "total": i} for i in range(100)])
        first = full_backup(target=target, repository=repository)
        client[db].orders.update_many({"_id": {"$lt": 50}}, {"$inc": {"total": 1000}})
        updated = (ts_text(newest_oplog_ts(client)), mongo_state(client, db))
        client[db].orders.insert_many([{"_id": i, "total": i, "pad": "x" * 200} for i in range(100, 300)])
        time.sleep(1.1)  # the last slice's second is over
        shipped = archive_logs(target=target, repository=repository)
        assert shipped["shipped"] == archive.units() and len(shipped["shipped"]) >= 3
        assert (shipped["lag_units"], shipped["lag_seconds"]) == (0, 0.0)
        assert shipped["raw_bytes"] > shipped["stored_bytes"] > 0

        at_point = restore(target=target, repository=repository, options={"to_ts": updated[0]})
        copy = at_point["restored"][db]
        reached = f"oplog time {updated[0]} ("  # the newest entry at or before the point: the point itself
        assert at_point["recovery_point"].startswith(reached), at_point["recovery_point"]
        assert at_point["recovery_point"].endswith(
            f"UTC; the newest oplog entry replayed up to the point) (asked: to_ts={updated[0]})"
        )
        assert at_point["timeline"] is None, "MongoDB has no timelines"
        state, message = last_run_message("restore-mongodb-oplogflow-")
        assert state == "COMPLETED" and f"; recovery point: {at_point['recovery_point']}; " in message, message
        assert "timeline" not in message and "n/a" not in message
        assert mongo_differences(updated[1], mongo_state(client, copy)) == [], "the restore flow's point in time"
        client.drop_database(copy)

        checked = verify(repository=repository, target=target)
        assert checked["problems"] == [] and checked["backups"] == 1, "one backup: the archive is not one"
        assert checked["log_units"] == len(archive.units()) and checked["unreadable"] == 0
        damaged = archive.units()[1]
        path = tmp_path / "repo" / archive.object_key(damaged)
        original = path.read_bytes()
        path.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
        with pytest.raises(IntegrityError, match=f"oplog archive of oplogflow: {damaged} is damaged"):
            verify(repository=repository, target=target)
        path.write_bytes(original)
        assert archive.log_start(archive_manifest(tmp_path, first["backup_id"])).unit in archive.units()

        second = full_backup(target=target, repository=repository)
        for batch in range(3):  # three one-second slices after the second backup
            client[db].orders.delete_many({"_id": {"$gte": 290 - 10 * batch}})
            time.sleep(1.1)
        archive_logs(target=target, repository=repository, follow_seconds=1.5)
        before = archive.records()
        pruned = prune(repository=repository, target=target)
        assert pruned["deleted"] == [first["backup_id"]] and pruned["kept"] == [second["backup_id"]]
        point = archive_manifest(tmp_path, second["backup_id"]).consistency.cluster_time
        gone = [r.name for r in before if (r.end.ts.time, r.end.ts.inc) <= tuple(map(int, point.split(":")))]
        assert pruned["log_units_deleted"] == len(gone) > 0 and archive.units() == [
            r.name for r in before if r.name not in gone
        ]
        assert verify(repository=repository, target=target)["problems"] == []

        assert len(archive.units()) >= 3
        middle = archive.units()[-2]  # a slice lost from the store
        (tmp_path / "repo" / archive.record_key(middle)).unlink()
        lost = f"oplog archive of oplogflow: missing 1: .*not archived.*{second['backup_id']}"
        with pytest.raises(IntegrityError, match=lost):
            verify(repository=repository, target=target)
    finally:
        client.drop_database(db)
        client.close()


def archive_manifest(tmp_path: Path, backup_id: str):
    return Repository(LocalStore(tmp_path / "repo")).catalog("mongodb", "oplogflow").get(backup_id)
