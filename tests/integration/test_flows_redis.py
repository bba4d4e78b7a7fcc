"""The flows on Redis targets, end to end through Prefect (test harness), on real redis-servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.fixtures.redis import SEED_USERS
from tests.integration.test_flows import assert_backup_fails_once, read_artifact
from vaultflow.blocks import BackupRepository, RedisTarget
from vaultflow.errors import ConfigError
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.incremental_backup import differential_backup, incremental_backup
from vaultflow.flows.restore import restore
from vaultflow.flows.restore_drill import restore_drill
from vaultflow.flows.verify import verify

pytestmark = pytest.mark.usefixtures("prefect_api")


def redis_target(server, name: str, **kw) -> RedisTarget:
    password = SecretStr(server.password) if server.password else None
    return RedisTarget(
        host=server.host, port=server.port, username=server.username, password=password, target_name=name, **kw
    )


def test_full_drill_restore_and_remote_incremental_fallback(redis_with_password, tmp_path: Path):
    conn = redis_with_password.client()
    conn.flushall()
    conn.mset(SEED_USERS)
    conn.hset("profile:1000", mapping={"plan": "pro", "visits": 3})
    target = redis_target(redis_with_password, "flowredis")
    repository = BackupRepository(local_path=str(tmp_path / "repo"))

    full = full_backup(target=target, repository=repository)
    assert full["kind"] == "full" and full["stored_size"] > 0 and full["objects"] == 1

    conn.set("user:1003", "Dana")
    # A remote target has no AOF files to copy: the flow says so and takes a full instead.
    second = incremental_backup(target=target, repository=repository)
    assert second["kind"] == "full" and "data_dir" in second["fell_back_to_full"]

    drill = restore_drill(target=target, repository=repository, rto_objective_s=600)
    assert drill["backup_id"] == second["backup_id"] and drill["rto_met"]
    rows = read_artifact("drill-redis-flowredis")
    assert {r["status"] for r in rows if r["database"] != "(all)"} == {"match"}
    assert {r["database"] for r in rows} >= {"db0"}

    conn.delete("user:1001")
    conn.set("user:1000", "Mallory")
    with pytest.raises(Exception, match="already exists"):
        restore(
            target=target,
            repository=repository,
            backup_id=full["backup_id"],
            into="original",
            options={"key_pattern": "user:*"},
        )
    assert conn.get("user:1000") == b"Mallory", "a refused restore changes nothing"
    result = restore(
        target=target,
        repository=repository,
        backup_id=full["backup_id"],
        into="original",
        options={"key_pattern": "user:*"},
        overwrite=True,
    )
    assert [r["status"] for r in result["comparison"]] == ["match"]
    assert {k: conn.get(k).decode() for k in SEED_USERS} == SEED_USERS
    assert conn.get("user:1003") == b"Dana", "a partial restore leaves other keys alone"

    checked = verify(repository=repository, target=target)
    assert checked["problems"] == [] and checked["backups"] == 2


def test_redis_options_are_refused_for_postgres_targets(pg18, fresh_db, tmp_path: Path):
    from tests.integration.test_flows import make_table, target_for

    db = fresh_db(pg18)
    make_table(pg18, db, rows=10)
    target = target_for(pg18, db, "pgnotredis")
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    full_backup(target=target, repository=repository)
    with pytest.raises(ConfigError, match="key_pattern does not apply to target .pgnotredis., a postgres target"):
        restore(target=target, repository=repository, options={"key_pattern": "user:*"})


def test_wrong_redis_password_fails_at_once_without_retries(redis_with_password, tmp_path: Path):
    target = RedisTarget(
        host=redis_with_password.host,
        port=redis_with_password.port,
        password=SecretStr("not-the-password"),
        target_name="redisbadpw",
    )
    assert_backup_fails_once(target, tmp_path)


def test_local_aof_chain_through_the_flows_verifies_and_drills(fresh_redis, tmp_path: Path):
    server = fresh_redis()
    conn = server.client()
    conn.mset(SEED_USERS)
    target = redis_target(server, "flowaof", data_dir=str(server.directory))
    repository = BackupRepository(local_path=str(tmp_path / "repo"))

    full = full_backup(target=target, repository=repository)
    conn.set("user:1003", "Dana")
    incr = incremental_backup(target=target, repository=repository)
    conn.rpush("events", "login", "logout")
    diff = differential_backup(target=target, repository=repository)
    assert (incr["kind"], incr["parent_id"]) == ("incremental", full["backup_id"])
    assert (diff["kind"], diff["parent_id"]) == ("differential", full["backup_id"])
    assert incr["fell_back_to_full"] is None and diff["stored_size"] < full["stored_size"]

    checked = verify(repository=repository, target=target)
    assert checked["problems"] == [] and checked["backups"] == 3, "AOF chains resolve in verify"

    drill = restore_drill(target=target, repository=repository, rto_objective_s=600)
    assert drill["backup_id"] == diff["backup_id"] and drill["rto_met"]
    rows = read_artifact("drill-redis-flowaof")
    assert {r["status"] for r in rows if r["database"] != "(all)"} == {"match"}
