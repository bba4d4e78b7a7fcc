"""Restore tasks: stream objects back (sha256 checked on the way), restore, compare."""

from __future__ import annotations

from prefect import task

from tasks.common import SIDE_EFFECT_TASK
from vaultflow.engines.base import BackupContext, RestoreResult
from vaultflow.manifest import Manifest


@task(name="restore-backup", **{**SIDE_EFFECT_TASK, "retries": 0})
def restore_backup(engine, ctx: BackupContext, manifest: Manifest, into: str | None,
                   overwrite: bool, databases: list[str] | None, recovery_target=None,
                   options: dict | None = None) -> RestoreResult:
    """`options`: engine-specific restore settings (Redis: key_pattern, into_db; PostgreSQL:
    no_owner, no_privileges)."""
    return engine.restore(ctx, manifest, into=into, overwrite=overwrite, databases=databases,
                          recovery_target=recovery_target, **(options or {}))


@task(name="drill-backup", **{**SIDE_EFFECT_TASK, "retries": 0})
def drill_backup(engine, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
    return engine.drill(ctx, manifest)
