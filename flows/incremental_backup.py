"""incremental-backup and differential-backup: what changed since the last backup / last full."""

from __future__ import annotations

from prefect import flow

from flows._backup import run_backup
from flows._support import FLOW_RETRIES, RepositoryParam, TargetParam, run_name
from vaultflow.manifest import BackupKind


@flow(name="incremental-backup", flow_run_name=run_name("incremental"), log_prints=True, **FLOW_RETRIES)
def incremental_backup(target: TargetParam, repository: RepositoryParam) -> dict:
    """Changes since the latest backup of any kind (PostgreSQL 17+: pg_basebackup --incremental).
    Without a usable parent it says why and takes a full backup instead."""
    return run_backup(BackupKind.INCREMENTAL, target, repository)


@flow(name="differential-backup", flow_run_name=run_name("differential"), log_prints=True, **FLOW_RETRIES)
def differential_backup(target: TargetParam, repository: RepositoryParam) -> dict:
    """Changes since the latest full backup. Without a usable full it takes one instead."""
    return run_backup(BackupKind.DIFFERENTIAL, target, repository)
