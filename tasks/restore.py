"""Restore tasks: stream objects back (sha256 checked on the way), restore, compare."""

from __future__ import annotations

from prefect import task

from tasks.common import SIDE_EFFECT_TASK
from vaultflow.engines.base import BackupContext, RestoreOptions, RestoreResult
from vaultflow.manifest import Manifest


@task(name="restore-backup", **{**SIDE_EFFECT_TASK, "retries": 0})
def restore_backup(engine, ctx: BackupContext, manifest: Manifest, into: str | None,
                   overwrite: bool, databases: list[str] | None,
                   options: RestoreOptions | None = None) -> RestoreResult:
    """`options`: the engine's typed restore options (its `restore_options` model; None: defaults)."""
    return engine.restore(ctx, manifest, into=into, overwrite=overwrite, databases=databases, options=options)


@task(name="drill-backup", **{**SIDE_EFFECT_TASK, "retries": 0})
def drill_backup(engine, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
    return engine.drill(ctx, manifest)
