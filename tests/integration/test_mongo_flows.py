"""MongoDB through the flows: full backup, restore, drill and verify on a server with --auth, and
the password nowhere it must not be (process argv and environment, run logs, artifacts, run
parameters, the repository's files)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.corpus.oracle import mongo_differences, mongo_state
from tests.fixtures.secret_watch import SecretWatch, assert_runs_keep_secret
from vaultflow.blocks import BackupRepository, MongoTarget
from vaultflow.flows._support import FLOW_RETRIES
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.incremental_backup import incremental_backup
from vaultflow.flows.restore import restore
from vaultflow.flows.restore_drill import restore_drill
from vaultflow.flows.verify import verify
from vaultflow.ports import free_port
from vaultflow.tasks.common import SIDE_EFFECT_TASK

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.mark.logs_to_api
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
        point = restored["recovery_point"]  # the incremental's own point, what the comparison checked
        assert point.startswith("oplog time ") and point.endswith(
            f"; backup {incremental['backup_id']}'s consistent point)"
        )
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


def test_an_unreachable_server_is_retried_and_each_attempt_says_where_why_and_what_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """Every attempt of the check-target task logs the server (host:port), the setting that
    bounded the wait (connect_timeout) and whether and when it is retried; so does every
    attempt of the flow. (tests/conftest.py shortens the delays; the policy is the default:
    docs/tasks.md, Retries.)"""
    caplog.set_level(logging.INFO)
    port = free_port()
    target = MongoTarget(host="127.0.0.1", port=port, target_name="gone", connect_timeout=0.3)
    state = full_backup(
        target=target, repository=BackupRepository(local_path=str(tmp_path / "repo")), return_state=True
    )
    assert state.is_failed()
    where = f"cannot reach MongoDB at 127.0.0.1:{port} within connect_timeout=0.3 s"
    lines = [record.getMessage() for record in caplog.records if where in record.getMessage()]
    task_attempts, flow_attempts = 1 + SIDE_EFFECT_TASK["retries"], 1 + FLOW_RETRIES["retries"]
    retried = [line for line in lines if "Retry " in line and " will start " in line]
    exhausted = [line for line in lines if "Retries are exhausted" in line]
    assert (len(retried), len(exhausted)) == ((task_attempts - 1) * flow_attempts, flow_attempts), lines
    assert all("transient: a Prefect run retries it" in line for line in retried + exhausted)
    flow_notes = [line for line in lines if line.startswith("ServerUnavailableError: ")]
    expected = [
        *(
            f"(transient: the flow run tries again in {FLOW_RETRIES['retry_delay_seconds']} s, retry {n} of "
            f"{FLOW_RETRIES['retries']})"
            for n in range(1, flow_attempts)
        ),
        f"(transient, but the flow run has no retries left (it allows {FLOW_RETRIES['retries']}))",
    ]
    assert len(flow_notes) == len(expected) and all(map(str.endswith, flow_notes, expected)), flow_notes
