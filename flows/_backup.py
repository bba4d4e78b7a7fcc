"""The body every backup flow shares: check, lock, back up in steps, announce, catalog.

The run graph shows the steps: check-target, plan-backup, one dump task run per unit (each
database and the globals of a logical PostgreSQL backup; the cluster, the RDB or the AOF
otherwise), finish-backup (the manifest, written last)."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.states import State

from vaultflow.engines.base import BackupContext
from vaultflow.errors import ChainBrokenError
from vaultflow.flows._locks import target_lock
from vaultflow.flows._names import run_started
from vaultflow.flows._report import RunReport
from vaultflow.flows._support import (
    ProgressReporter,
    emit_backup_event,
    fail_fast_on_permanent_errors,
    lineage,
    load_repository,
    load_target,
    publish_catalog,
)
from vaultflow.manifest import BackupKind, Manifest
from vaultflow.repository import Repository
from vaultflow.summary import backup_summary
from vaultflow.tasks.backup import check_target, dump, finish_backup, plan_backup


def backup_steps(engine, ctx: BackupContext, repo: Repository, kind: BackupKind, log) -> Manifest:
    """plan-backup, a dump task per unit (in order: they stream one after another, as one call
    did), finish-backup. A failure before the manifest is committed removes this backup's payload."""
    plan = plan_backup(engine, ctx, kind)
    with repo.uncommitted(plan.engine, plan.target, plan.backup_id, log):
        results = [dump(engine, ctx, plan, unit) for unit in plan.units]
        return finish_backup(engine, ctx, plan, results)


def backup_report(kind: BackupKind, target) -> RunReport:
    """The RunReport of a backup flow asked for `kind`: its summary keyed
    '<kind>-backup-summary-<engine>-<target>' (the kind asked for, whatever was taken)."""
    return RunReport(f"{kind.value}-backup", f"{kind.value} backup", target)


def run_backup(
    kind: BackupKind,
    target,
    repository,
    report: RunReport,
    asked: BackupKind | None = None,
    why_full: str | None = None,
    accept_new_source: bool = False,
) -> State:
    """Take a `kind` backup; an incremental/differential without a usable parent (none yet,
    pruned, corrupt, server re-initialized, timeline switch) says why and takes a full.

    `report`: the flow's RunReport (backup_report), told the target once loaded. `asked` and
    `why_full`: the kind the run was asked for and why it takes a full instead, when the caller
    decided that before (flows/incremental_backup.py). `accept_new_source`: the backup may come
    from another source than the target's newest one (vaultflow.engines.base.with_source; without
    it that is a ConfigError, failing at once). Returns the run's Completed state, its
    message the summary line (vaultflow.summary.backup_summary), its data the result:
    backup_id, kind, parent_id, stored_size and raw_size (bytes), seconds, objects,
    fell_back_to_full (why a full was taken instead, or None)."""
    logger = get_run_logger()
    fell_back = why_full
    with fail_fast_on_permanent_errors():
        target_block = load_target(target)
        _, repo = load_repository(repository)
        engine = target_block.engine()
        report.about(engine.name, target_block.name)
        version = check_target(engine)
        logger.info(
            f"{kind.value} backup of {engine.name}/{target_block.name} (server {version}) into {repo.description}"
        )
        with (
            ProgressReporter(f"{kind.value} backup of {target_block.name}") as progress,
            target_lock(repo, engine.name, target_block.name, "backup", log=logger.warning),
        ):
            ctx = BackupContext(
                repository=repo,
                lineage=lineage(),
                log=logger.info,
                progress=progress,
                run_started=run_started(),
                accept_new_source=accept_new_source,
            )
            try:
                manifest = backup_steps(engine, ctx, repo, kind, logger.warning)
            except ChainBrokenError as exc:
                if kind == BackupKind.FULL:
                    raise
                fell_back = str(exc)
                article = "an" if kind.value[0] in "aeiou" else "a"
                logger.warning(
                    f"cannot take {article} {kind.value} backup: {str(exc).rstrip('.')}. Taking a full backup instead."
                )
                manifest = backup_steps(engine, ctx, repo, BackupKind.FULL, logger.warning)
    emit_backup_event(
        "completed",
        manifest,
        {
            "stored_size": manifest.stored_size,
            "raw_size": manifest.raw_size,
            **({"fell_back_to_full": fell_back} if fell_back else {}),
        },
    )
    publish_catalog(repo, manifest.engine, manifest.target)
    seconds = (manifest.finished_at - manifest.started_at).total_seconds()
    result = {
        "backup_id": manifest.id,
        "kind": manifest.kind.value,
        "parent_id": manifest.parent_id,
        "stored_size": manifest.stored_size,
        "raw_size": manifest.raw_size,
        "seconds": seconds,
        "objects": len(manifest.objects),
        "fell_back_to_full": fell_back,
    }
    summary = backup_summary(result, f"{manifest.engine}/{manifest.target}", (asked or kind).value)
    logger.info(f"{summary.line}, {len(manifest.objects)} objects")
    return report.finish(summary, result)
