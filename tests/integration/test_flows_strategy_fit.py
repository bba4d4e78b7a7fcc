"""A target asked for a strategy it cannot do: incremental/differential on a target without that
form take a full backup and say so once (one warning, the run's state message, no failed task);
archive-logs on a target without WAL archiving fails at once, saying what to configure."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.fixtures.prefect_runs import task_runs_of
from vaultflow.blocks import BackupRepository, PostgresTarget, RedisTarget
from vaultflow.errors import ConfigError
from vaultflow.flows.archive_logs import archive_logs
from vaultflow.flows.incremental_backup import differential_backup, incremental_backup

pytestmark = pytest.mark.usefixtures("prefect_api")


def task_states(flow_run_id) -> list[tuple[str, str]]:
    runs = task_runs_of(flow_run_id)
    return sorted((run.name, run.state.type.value) for run in runs)


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def assert_full_said_once(state, caplog, why: str) -> dict:
    assert state.is_completed(), state
    assert state.message.startswith(f"took a full backup: {why}; backup {state.result()['backup_id']} ("), state.message
    result = state.result()
    assert result["kind"] == "full" and result["fell_back_to_full"] == why
    assert len(warnings_about(caplog, why)) == 1, [r.getMessage() for r in caplog.records]
    states = task_states(state.state_details.flow_run_id)
    assert states and all(s == "COMPLETED" for _, s in states), states
    # one backup planned, the full one: no incremental/differential attempt ran first
    assert [name for name, _ in states if name.startswith("plan-")] == ["plan-full"], states
    return result


def test_logical_target_asked_for_an_incremental_takes_a_full_and_says_so(
    pg18, fresh_db, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    database = fresh_db(pg18)
    pg18.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)", dbname=database)
    target = PostgresTarget(
        host=pg18.host,
        port=pg18.port,
        user=pg18.user,
        databases=[database],
        bin_dir=str(pg18.client_bin_dir),
        target_name="fit-logical",
    )
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    caplog.set_level(logging.INFO)
    for flow in (incremental_backup, differential_backup):
        caplog.clear()
        kind = flow.name.split("-")[0]
        state = flow(target=target, repository=repository, return_state=True)
        assert_full_said_once(state, caplog, f"fit-logical takes logical backups, which have no {kind} form")
    assert [m.kind.value for m in repository.build().catalog("postgres", "fit-logical").manifests] == ["full", "full"]


def test_redis_targets_without_aof_increments_take_a_full_and_say_so(
    fresh_redis, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    server = fresh_redis(name="fit-noaof", settings={"appendonly": "no"})
    server.client().set("user:1000", "Alice")

    remote = RedisTarget(host=server.host, port=server.port, target_name="fit-remote")
    state = differential_backup(target=remote, repository=repository, return_state=True)
    assert_full_said_once(
        state,
        caplog,
        "fit-remote is backed up remotely (no data_dir), and differential backups copy the AOF files on the Redis host",
    )
    caplog.clear()
    local = RedisTarget(host=server.host, port=server.port, data_dir=str(server.directory), target_name="fit-noaof")
    state = incremental_backup(target=local, repository=repository, return_state=True)
    assert_full_said_once(
        state,
        caplog,
        "fit-noaof has appendonly off, and incremental backups copy AOF increments "
        "(CONFIG SET appendonly yes, and in redis.conf)",
    )


def test_a_first_incremental_starts_the_chain_with_a_full_and_no_failed_task(fresh_redis, tmp_path: Path):
    server = fresh_redis(name="fit-first")  # local mode, appendonly yes: it can take incrementals
    server.client().set("user:1000", "Alice")
    target = RedisTarget(host=server.host, port=server.port, data_dir=str(server.directory), target_name="fit-first")
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    state = incremental_backup(target=target, repository=repository, return_state=True)
    assert state.is_completed() and state.message.startswith(
        "took a full backup: no backup of fit-first yet, and a chain starts with a full backup; backup "
    ), state.message
    states = task_states(state.state_details.flow_run_id)
    assert states and all(s == "COMPLETED" for _, s in states), states
    server.client().set("user:1001", "Bob")
    second = incremental_backup(target=target, repository=repository)
    assert (second["kind"], second["parent_id"]) == ("incremental", state.result()["backup_id"])


def test_archive_logs_on_a_logical_target_fails_at_once_saying_what_to_configure(pg18, tmp_path: Path):
    target = PostgresTarget(host=pg18.host, port=pg18.port, target_name="fit-wal", wal_spool=str(tmp_path))
    with pytest.raises(
        ConfigError,
        match=r"fit-wal takes logical backups \(pg_dump\): WAL archiving needs a "
        r"physical target .*point the deployment at a MongoDB target \(oplog slices\) or a physical "
        r"PostgreSQL target with a wal_spool, or pause it",
    ):
        archive_logs(target=target, repository=BackupRepository(local_path=str(tmp_path / "repo")))
