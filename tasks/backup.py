"""Backup tasks: one-line delegations to the engine."""

from __future__ import annotations

from prefect import task

from tasks.common import SIDE_EFFECT_TASK
from vaultflow.engines.base import BackupContext
from vaultflow.manifest import BackupKind, Manifest


@task(name="check-target", **SIDE_EFFECT_TASK)
def check_target(engine) -> str:
    return engine.check()


@task(name="full-backup", **SIDE_EFFECT_TASK)
def take_full_backup(engine, ctx: BackupContext) -> Manifest:
    return engine.full_backup(ctx)


@task(name="incremental-backup", **SIDE_EFFECT_TASK)
def take_incremental_backup(engine, ctx: BackupContext, kind: BackupKind) -> Manifest:
    return engine.incremental_backup(ctx, kind)
