"""MongoDB through the flows: full backup, restore, drill and verify on a server with --auth, and
the password nowhere it must not be (process argv and environment, run logs, artifacts, run
parameters, the repository's files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks import BackupRepository, MongoTarget
from flows.full_backup import full_backup
from flows.incremental_backup import incremental_backup
from flows.restore import restore
from flows.restore_drill import restore_drill
from flows.verify import verify
from tests.corpus.oracle import mongo_differences, mongo_state
from tests.fixtures.secret_watch import SecretWatch, assert_runs_keep_secret

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_flows_on_a_password_protected_server_keep_the_password_private(mongo_with_password, tmp_path: Path):
    server = mongo_with_password
    client = server.client()
    db = "vf_secret_app"
    client[db].orders.insert_many([{"_id": i, "total": i * 3, "note": "ünïcode"} for i in range(200)])
    client[db].orders.create_index("total")
    target = MongoTarget(
        host=server.host,
        port=server.port,
        username=server.username,
        password=SecretStr(server.password),
        databases=[db],
        target_name="mongopriv",
    )
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    try:
        with SecretWatch(server.password) as watch:
            backup = full_backup(target=target, repository=repository)
            client[db].orders.update_many({"_id": {"$lt": 50}}, {"$set": {"note": "changed"}})
            client[db].refunds.insert_one({"_id": 1, "order": 7})
            source = mongo_state(client, db)
            incremental = incremental_backup(target=target, repository=repository)
            restored = restore(target=target, repository=repository, backup_id=incremental["backup_id"])
            drill = restore_drill(target=target, repository=repository)
            checked = verify(repository=repository, target=target)
        copy = restored["restored"][db]
        assert mongo_differences(source, mongo_state(client, copy)) == []
        assert incremental["kind"] == "incremental" and not incremental.get("fell_back_to_full")
        assert drill["rto_met"] and checked["problems"] == []
    finally:
        for name in client.list_database_names():
            if name.startswith(db):
                client.drop_database(name)
        client.close()

    assert watch.leaks == [], "the password was in a process's argv or environment"
    runs, artifacts = assert_runs_keep_secret(server.password, "%mongopriv%", tmp_path / "repo")
    assert len(runs) >= 5
    assert backup["backup_id"] in json.dumps([a.data for a in artifacts], default=str)
