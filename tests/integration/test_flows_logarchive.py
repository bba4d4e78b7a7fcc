"""archive-logs, verify and prune through the log-archive contract only: a log archive and target
kind defined in tests (tests/fixtures/toy_logarchive.py) register themselves, and the flows ship,
check and prune it with no engine-specific code knowing it; the archive-logs task serves a
user's own flow. Engines without a log archive get a clear error from archive-logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures.toy_logarchive import ENGINE, ToyLogConsistency, toy_engine_registered, unit_name
from vaultflow.blocks import BackupRepository, RedisTarget
from vaultflow.errors import ConfigError, IntegrityError
from vaultflow.flows.archive_logs import archive_logs
from vaultflow.flows.prune import prune
from vaultflow.flows.verify import verify
from vaultflow.manifest import BackupKind, BackupMode, Manifest, new_backup_id
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

pytestmark = pytest.mark.usefixtures("prefect_api")


def commit_backup(repo: Repository, target: str, log_start: str, age: timedelta) -> Manifest:
    when = datetime.now(UTC) - age
    manifest = Manifest(
        id=new_backup_id(BackupKind.FULL, when),
        engine=ENGINE,
        target=target,
        kind=BackupKind.FULL,
        mode=BackupMode.LOGICAL,
        started_at=when,
        finished_at=when + timedelta(seconds=1),
        consistency=ToyLogConsistency(log_start=log_start),
        objects=[],
    )
    repo.commit(manifest)
    return manifest


def test_a_log_archive_registered_by_a_test_is_shipped_verified_and_pruned_by_the_flows(tmp_path: Path):
    log_dir = tmp_path / "server-log"
    log_dir.mkdir()
    names = [unit_name(i) for i in range(1, 6)]
    for name in names:
        (log_dir / name).write_bytes(name.encode() * 100)
    repository = BackupRepository(
        local_path=str(tmp_path / "repo"), keep_last=1, keep_daily=None, keep_weekly=None, keep_monthly=None
    )
    repo = Repository(LocalStore(tmp_path / "repo"))

    with toy_engine_registered() as ToyLogTarget:
        target = ToyLogTarget(log_dir=str(log_dir))
        shipped = archive_logs(target=target, repository=repository)
        assert shipped["shipped"] == names and shipped["raw_bytes"] == 5 * 700
        assert (shipped["lag_units"], shipped["lag_seconds"], shipped["max_lag_units"]) == (0, 0.0, 0)
        assert (shipped["lag_segments"], shipped["max_lag_segments"]) == (0, 0), "the older names stay"
        assert list(log_dir.iterdir()) == []

        older = commit_backup(repo, "toy", names[1], timedelta(minutes=2))
        newer = commit_backup(repo, "toy", names[3], timedelta(minutes=1))
        checked = verify(repository=repository, target=target)
        assert checked["problems"] == [] and checked["backups"] == 2, "two backups: the archive is not one"
        assert checked["log_units"] == 5, "and its five units, counted apart"

        for key in (f"{ENGINE}/toy/logs/toy/{names[2]}.json", f"{ENGINE}/toy/logs/toy/{names[2]}"):
            repo.store.delete(key)  # a unit lost from the archive
        with pytest.raises(IntegrityError, match=f"toy log archive of toy: missing 1: {names[2]}; backup {older.id}"):
            verify(repository=repository)  # every target of the repository, engines found by name

        planned = prune(repository=repository, target=target, dry_run=True)
        assert planned["log_units_deleted"] == 2, "a dry run counts the log units it would delete"
        assert len(list((tmp_path / "repo" / ENGINE / "toy" / "logs" / "toy").iterdir())) == 2 * 4, "and keeps them"
        pruned = prune(repository=repository, target=target)
        assert pruned["deleted"] == [older.id] and pruned["kept"] == [newer.id]
        assert pruned["log_units_deleted"] == pruned["wal_deleted"] == 2, "u1 and u2: before the kept backup's start"
        assert sorted(p.name for p in (tmp_path / "repo" / ENGINE / "toy" / "logs" / "toy").iterdir()) == [
            f"{n}{ext}" for n in names[3:] for ext in ("", ".json")
        ]
        assert verify(repository=repository)["problems"] == [], "the hole went with the old backup"

        with pytest.raises(
            ConfigError,
            match=r"toy has no log_dir\. To archive logs, point the deployment at a MongoDB target \(oplog "
            r"slices\) or a physical PostgreSQL target with a wal_spool or a toy target with a "
            r"log_dir, or pause it\.",
        ):
            archive_logs(target=ToyLogTarget(), repository=repository)


def test_a_users_own_flow_ships_logs_with_the_archive_logs_task(tmp_path: Path):
    from prefect import flow

    from vaultflow.logarchive import open_log_archive
    from vaultflow.tasks.logs import archive_logs as archive_logs_task

    log_dir = tmp_path / "server-log"
    log_dir.mkdir()
    (log_dir / unit_name(1)).write_bytes(b"x" * 10)
    repo = Repository(LocalStore(tmp_path / "repo"))

    with toy_engine_registered() as ToyLogTarget:
        target = ToyLogTarget(log_dir=str(log_dir))

        @flow(name="ship-toy-logs")
        def ship_toy_logs() -> dict:
            archive = open_log_archive(target.engine_name, repo, target.name, target)
            return archive_logs_task(archive).as_dict()

        assert ship_toy_logs()["shipped"] == [unit_name(1)]


def test_archive_logs_on_an_engine_without_a_log_archive_fails_at_once_naming_it(tmp_path: Path):
    target = RedisTarget(host="127.0.0.1", port=1, target_name="cache")  # never contacted
    with pytest.raises(
        ConfigError,
        match=r"cache is a Redis target: .*\. To archive logs, point the deployment at a MongoDB target "
        r"\(oplog slices\) or a physical PostgreSQL target with a wal_spool, or pause it",
    ):
        archive_logs(target=target, repository=BackupRepository(local_path=str(tmp_path / "repo")))
