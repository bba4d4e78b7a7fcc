"""Backups as visible steps: the run graph of a full backup, a retried dump, a user's own flow.

Real PostgreSQL 18 and Redis, the Prefect test harness; task runs are read back from its API.
"""

from __future__ import annotations

import inspect
import threading
import time
from pathlib import Path

import psycopg
import pytest
from prefect import flow

from tests.corpus.oracle import assert_pg_restored
from tests.fixtures.prefect_runs import task_runs_of
from vaultflow.blocks import BackupRepository, PostgresTarget, RedisTarget
from vaultflow.engines.base import BackupContext
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.restore_drill import restore_drill
from vaultflow.manifest import BackupKind
from vaultflow.source import held_databases
from vaultflow.tasks import (
    check_target,
    dump,
    finish_backup,
    plan_backup,
    prune,
    restore_and_compare,
    upload,
    verify_checksum,
)

pytestmark = pytest.mark.usefixtures("prefect_api")
ROOT = Path(__file__).resolve().parents[2]


def task_runs(state, count: int | None = None) -> dict[str, object]:
    """Task run name -> task run, of the flow run that ended in `state` (at least `count` of
    them once the API has recorded them, when given)."""
    runs = task_runs_of(state.state_details.flow_run_id, count)
    return {run.name: run for run in runs}


def two_databases(pg, fresh_db) -> tuple[str, str]:
    first, second = fresh_db(pg), fresh_db(pg)
    for db, rows in ((first, 300), (second, 40)):
        pg.execute(
            f"CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) "
            f"FROM generate_series(1, {rows}) g",
            dbname=db,
        )
    return first, second


def test_run_graph_of_a_full_backup_shows_a_dump_per_database(pg18, fresh_db, tmp_path: Path):
    first, second = two_databases(pg18, fresh_db)
    target = PostgresTarget(
        host=pg18.host,
        port=pg18.port,
        user=pg18.user,
        databases=[first, second],
        target_name="graph",
        bin_dir=str(pg18.client_bin_dir),
    )
    state = full_backup(
        target=target, repository=BackupRepository(local_path=str(tmp_path / "repo")), return_state=True
    )
    result = state.result()
    runs = task_runs(state, 6)
    assert sorted(runs) == sorted(
        [
            "check-target",
            "plan-full",
            "dump-globals",
            f"dump-database-{first}",
            f"dump-database-{second}",
            f"finish-{result['backup_id']}",
        ]
    )
    assert all(run.state.is_completed() and run.run_count == 1 for run in runs.values())
    # one after another, in plan order, and the manifest after every dump
    order = sorted(runs.values(), key=lambda run: run.start_time)
    assert [run.name for run in order] == [
        "check-target",
        "plan-full",
        "dump-globals",
        f"dump-database-{first}",
        f"dump-database-{second}",
        f"finish-{result['backup_id']}",
    ]


def test_redis_backup_graph_has_its_one_unit(redis_source, tmp_path: Path):
    redis_source.client().set("k", "v")
    target = RedisTarget(host=redis_source.host, port=redis_source.port, target_name="graph-redis")
    state = full_backup(
        target=target, repository=BackupRepository(local_path=str(tmp_path / "repo")), return_state=True
    )
    runs = task_runs(state, 4)
    assert sorted(runs) == sorted(["check-target", "plan-full", "dump-rdb", f"finish-{state.result()['backup_id']}"])


def test_a_retried_dump_redoes_only_its_database(pg18, fresh_db, tmp_path: Path):
    """The second database's table is locked by another session when its dump starts: the dump
    waits lock_timeout_s, fails with a retryable LockWaitError, and only that dump runs again once
    the lock is gone. The first database's object is written once (same inode at the end)."""
    first, second = two_databases(pg18, fresh_db)
    repo_dir = tmp_path / "repo"
    target = PostgresTarget(
        host=pg18.host,
        port=pg18.port,
        user=pg18.user,
        databases=[first, second],
        target_name="retry",
        bin_dir=str(pg18.client_bin_dir),
        lock_timeout_s=1.0,
    )
    blocker = psycopg.connect(pg18.conninfo(second))
    blocker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")  # held in the open transaction
    seen: dict[str, object] = {}

    def release_after_first_failed_wait() -> None:
        with psycopg.connect(pg18.conninfo(second), autocommit=True) as watch:
            waiting = "SELECT count(*) FROM pg_locks WHERE relation = 't'::regclass AND NOT granted"
            deadline = time.monotonic() + 120
            while watch.execute(waiting).fetchone()[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            seen["first_inode"] = [p.stat().st_ino for p in repo_dir.rglob(f"{first}.dump.zst")]
            while watch.execute(waiting).fetchone()[0] > 0 and time.monotonic() < deadline:
                time.sleep(0.05)  # the first attempt gives up after lock_timeout_s
        blocker.rollback()

    watcher = threading.Thread(target=release_after_first_failed_wait)
    watcher.start()
    try:
        state = full_backup(target=target, repository=BackupRepository(local_path=str(repo_dir)), return_state=True)
    finally:
        watcher.join()
        blocker.close()
    assert state.is_completed(), state
    runs = task_runs(state, 6)
    assert runs[f"dump-database-{second}"].run_count == 2, "the locked database's dump ran again"
    assert runs[f"dump-database-{first}"].run_count == 1 and runs["dump-globals"].run_count == 1
    assert runs["plan-full"].run_count == 1
    [first_object] = list(repo_dir.rglob(f"{first}.dump.zst"))
    assert seen["first_inode"] == [first_object.stat().st_ino], "the first database's dump was not rewritten"
    assert len(list(repo_dir.rglob("manifest.json"))) == 1
    drill = restore_drill(target=target, repository=BackupRepository(local_path=str(repo_dir)))
    assert drill["tables"] >= 2 and drill["backup_id"] == state.result()["backup_id"]


@flow
def nightly_offsite(target: PostgresTarget, local: BackupRepository, offsite: BackupRepository, suffix: str) -> dict:
    """The user's own flow of docs/tasks.md: back up into the local repository one database at a
    time, send the backup to the off-site one, check it there and restore each database from there."""
    engine, src, dst = target.engine(), local.build(), offsite.build()
    ctx = BackupContext(repository=src)
    check_target(engine)
    plan = plan_backup(engine, ctx, BackupKind.FULL)
    results = [dump(engine, ctx, plan, unit) for unit in plan.units]
    manifest = finish_backup(engine, ctx, plan, results)
    sent = upload(src, dst, manifest)
    checks = verify_checksum(dst, manifest)
    restored = [
        restore_and_compare(
            engine, BackupContext(repository=dst), manifest, databases=[db], into=f"{db}{suffix}", overwrite=True
        )
        for db in sorted(held_databases(manifest))
    ]
    return {
        "backup_id": manifest.id,
        "sent": list(sent.copied),
        "checks_ok": all(c.ok for c in checks),
        "comparison_ok": all(r.comparison.ok for r in restored),
        "restored": {k: v for r in restored for k, v in r.restored.items()},
    }


def test_a_users_flow_composed_from_the_tasks(pg18, fresh_db, tmp_path: Path):
    """Two databases: each restores into its own check copy (`into` names one database; the docs'
    flow once restored a whole multi-database backup into one name and failed at its last step)."""
    dbs = sorted([fresh_db(pg18), fresh_db(pg18)])
    for n, db in enumerate(dbs):
        pg18.execute(
            f"CREATE TABLE staff (id int PRIMARY KEY, name text); INSERT INTO staff VALUES "
            f"(1, 'Alice'), (2, 'Bob'), (3, 'Charlie {n}')",
            dbname=db,
        )
    target = PostgresTarget(
        host=pg18.host,
        port=pg18.port,
        user=pg18.user,
        databases=dbs,
        target_name="own-flow",
        bin_dir=str(pg18.client_bin_dir),
    )
    local = BackupRepository(local_path=str(tmp_path / "local"))
    offsite = BackupRepository(local_path=str(tmp_path / "offsite"))
    suffix = "_offsite"
    copies = {db: f"{db}{suffix}" for db in dbs}
    try:
        first = nightly_offsite(target, local, offsite, suffix)
        assert first["comparison_ok"] and first["restored"] == copies
        for db, copy in copies.items():
            assert_pg_restored(pg18, db, pg18, copy)
        # The next night: the same check copies are replaced by the new backup's (rerunnable).
        pg18.execute("INSERT INTO staff VALUES (4, 'Dana')", dbname=dbs[0])
        state = nightly_offsite(target, local, offsite, suffix, return_state=True)
        result = state.result()
        assert result["checks_ok"] and result["comparison_ok"] and result["restored"] == copies
        assert result["backup_id"] != first["backup_id"]
        assert result["sent"] == ["globals.sql.zst", *(f"db/{db}.dump.zst" for db in dbs)]
        for db, copy in copies.items():
            assert_pg_restored(pg18, db, pg18, copy)
    finally:
        for copy in copies.values():
            pg18.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
    names = sorted(run.name for run in task_runs_of(state.state_details.flow_run_id, 10))  # two restore-<id>
    backup_id = result["backup_id"]
    assert names == sorted(
        [
            "check-target",
            "plan-full",
            "dump-globals",
            *(f"dump-database-{db}" for db in dbs),
            f"finish-{backup_id}",
            f"upload-{backup_id}",
            f"verify-{backup_id}",
            f"restore-{backup_id}",
            f"restore-{backup_id}",
        ]
    )
    manifest = offsite.build().catalog("postgres", "own-flow").get(backup_id)

    @flow
    def forget(repository: BackupRepository) -> int:
        return prune(repository.build(), manifest)

    assert forget(offsite) == 4  # globals, the two dumps, the manifest
    assert [m.id for m in offsite.build().catalog("postgres", "own-flow").manifests] == [first["backup_id"]]


def test_the_docs_flow_restores_as_the_tested_one():
    """The flow above is docs/tasks.md's example: its restore call, the one that makes it
    rerunnable (the check copy is overwritten), is the same in both."""
    call = (
        "restore_and_compare(\n"
        "            engine, BackupContext(repository=dst), manifest, databases=[db], "
        'into=f"{db}{suffix}", overwrite=True\n'
        "        )"
    )
    assert call in (ROOT / "docs" / "tasks.md").read_text()
    assert call in inspect.getsource(nightly_offsite)
    assert "for db in sorted(held_databases(manifest))" in (ROOT / "docs" / "tasks.md").read_text()
