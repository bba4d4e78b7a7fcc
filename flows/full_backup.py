"""full-backup: a complete backup of one target into a repository."""

from __future__ import annotations

from prefect import flow

from vaultflow.flows._backup import backup_report, run_backup
from vaultflow.flows._names import run_name
from vaultflow.flows._support import FLOW_RETRIES, RepositoryParam, TargetParam
from vaultflow.manifest import BackupKind


@flow(name="full-backup", flow_run_name=run_name("full"), log_prints=True, **FLOW_RETRIES)
def full_backup(target: TargetParam, repository: RepositoryParam, accept_new_source: bool = False) -> dict:
    """Back up `target` (every database, or the whole cluster when physical) into `repository`;
    the manifest is written last.

    Args:
        target: The target block, or its name ('postgres-target/prod', 'redis-target/cache', or
            'prod' when one kind alone has a block of that name).
        repository: The BackupRepository block, or its name ('backup-repository/main').
        accept_new_source: This target's backups may come from another source than its newest
            backup (the server really moved). Without it a backup whose source (server, database
            set) differs from the newest backup's is refused: give the block its own target_name.
    """
    with backup_report(BackupKind.FULL, target) as report:
        return run_backup(BackupKind.FULL, target, repository, report, accept_new_source=accept_new_source)
