"""incremental-backup and differential-backup: what changed since the last backup / last full."""

from __future__ import annotations

from prefect import flow, get_run_logger

from vaultflow.flows._backup import backup_report, run_backup
from vaultflow.flows._fit import how_to_fix, misfit, server_misfit
from vaultflow.flows._names import run_name
from vaultflow.flows._support import (
    FLOW_RETRIES,
    RepositoryParam,
    TargetParam,
    fail_fast_on_permanent_errors,
    load_repository,
    load_target,
)
from vaultflow.manifest import BackupKind


def _backup_or_full(kind: BackupKind, target, repository, accept_new_source: bool = False):
    """A target that cannot take `kind` at all (a logical PostgreSQL target, a remote or
    appendonly-off Redis target) gets a full backup, said once: one warning and the run's state
    message, no failed task. So does a target with no backup yet (a deployment's first run before
    its weekly full). A parent that exists but cannot be used (pruned, corrupt, another timeline)
    is found by the engine, and run_backup falls back to a full, saying why. `accept_new_source`:
    run_backup's."""
    with backup_report(kind, target) as report:
        with fail_fast_on_permanent_errors():
            block = load_target(target)
            why = misfit(kind.value, block) or server_misfit(kind.value, block)
            if why is None:
                _, repo = load_repository(repository)
                if not repo.catalog(block.engine().name, block.name).manifests:
                    first = f"no backup of {block.name} yet, and a chain starts with a full backup"
                    get_run_logger().info(f"{first}: taking a full backup instead of a {kind.value} one")
                    return run_backup(
                        BackupKind.FULL,
                        block,
                        repository,
                        report,
                        asked=kind,
                        why_full=first,
                        accept_new_source=accept_new_source,
                    )
        if why is None:
            return run_backup(kind, target, repository, report, accept_new_source=accept_new_source)
        get_run_logger().warning(
            f"{why}: taking a full backup instead. To get {kind.value} backups, {how_to_fix(kind.value)}."
        )
        return run_backup(
            BackupKind.FULL, block, repository, report, asked=kind, why_full=why, accept_new_source=accept_new_source
        )


@flow(name="incremental-backup", flow_run_name=run_name("incremental"), log_prints=True, **FLOW_RETRIES)
def incremental_backup(target: TargetParam, repository: RepositoryParam, accept_new_source: bool = False) -> dict:
    """Changes since the latest backup of any kind (PostgreSQL 17+: pg_basebackup --incremental;
    Redis: AOF increments). A target that has no incremental form takes a full backup and says so
    in the run's state message; without a usable parent it says why and takes a full backup.

    Args:
        target: The target block, or its name ('postgres-target/prod', 'redis-target/cache', or
            'prod' when one kind alone has a block of that name).
        repository: The BackupRepository block, or its name ('backup-repository/main').
        accept_new_source: This target's backups may come from another source than its newest
            backup (the server really moved). Without it a backup whose source (server, database
            set) differs from the newest backup's is refused: give the block its own target_name.
    """
    return _backup_or_full(BackupKind.INCREMENTAL, target, repository, accept_new_source)


@flow(name="differential-backup", flow_run_name=run_name("differential"), log_prints=True, **FLOW_RETRIES)
def differential_backup(target: TargetParam, repository: RepositoryParam, accept_new_source: bool = False) -> dict:
    """Changes since the latest full backup. A target that has no differential form, or no usable
    full, takes a full backup instead and says why.

    Args:
        target: The target block, or its name ('postgres-target/prod', 'redis-target/cache', or
            'prod' when one kind alone has a block of that name).
        repository: The BackupRepository block, or its name ('backup-repository/main').
        accept_new_source: This target's backups may come from another source than its newest
            backup (the server really moved). Without it a backup whose source (server, database
            set) differs from the newest backup's is refused: give the block its own target_name.
    """
    return _backup_or_full(BackupKind.DIFFERENTIAL, target, repository, accept_new_source)
