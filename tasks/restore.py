"""Restore tasks: stream objects back (sha256 checked on the way), restore, compare."""

from __future__ import annotations

from prefect import task

from vaultflow.engines.base import BackupContext, RestoreOptions, RestoreResult
from vaultflow.manifest import Manifest
from vaultflow.tasks.common import SIDE_EFFECT_TASK


@task(name="restore-and-compare", task_run_name="restore-{manifest.id}", **{**SIDE_EFFECT_TASK, "retries": 0})
def restore_and_compare(
    engine,
    ctx: BackupContext,
    manifest: Manifest,
    into: str | None = None,
    overwrite: bool = False,
    databases: list[str] | None = None,
    options: RestoreOptions | None = None,
) -> RestoreResult:
    """Restore `manifest` (every object's sha256 checked while streaming) and compare the copy with
    the backup's fingerprints: RestoreResult.comparison says match or mismatch per table/key space.
    `options`: the engine's typed restore options (its `restore_options` model; None: defaults)."""
    return engine.restore(ctx, manifest, into=into, overwrite=overwrite, databases=databases, options=options)


restore_backup = restore_and_compare  # the restore flow's name for it


@task(name="restore-and-compare", task_run_name="drill-{manifest.id}", **{**SIDE_EFFECT_TASK, "retries": 0})
def drill_backup(engine, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
    """restore-and-compare into scratch (databases, a server), then remove the scratch copy."""
    return engine.drill(ctx, manifest)
