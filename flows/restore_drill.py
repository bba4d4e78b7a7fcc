"""restore-drill: prove the latest backup restores, within the recovery time objective."""

from __future__ import annotations

from contextlib import ExitStack

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from vaultflow.compare import UNLOGGED_EMPTY
from vaultflow.errors import RefusedError
from vaultflow.flows._locks import still_there, target_lock
from vaultflow.flows._names import run_name
from vaultflow.flows._report import DrillFailureAlert, RunReport
from vaultflow.flows._support import (
    FLOW_RETRIES,
    RepositoryParam,
    TargetParam,
    artifact_key,
    emit_backup_event,
    fail_fast_on_permanent_errors,
    open_backup,
    publish_catalog,
    record_check,
    unless_api_down,
)
from vaultflow.summary import RtoSeconds, drill_summary, human_duration, objective_duration
from vaultflow.tasks.restore import drill_backup


@flow(name="restore-drill", flow_run_name=run_name("drill"), log_prints=True, **FLOW_RETRIES)
def restore_drill(
    target: TargetParam, repository: RepositoryParam, rto_objective_s: RtoSeconds = 900.0, backup_id: str = "latest"
) -> dict:
    """Restore into scratch (databases or a server), compare with the manifest, time it, clean up.

    The run fails when any table differs or the restore took longer than `rto_objective_s`.

    Args:
        target: The target block, or its name ('postgres-target/prod', 'redis-target/cache', or
            'prod' when one kind alone has a block of that name).
        repository: The BackupRepository block, or its name ('backup-repository/main').
        rto_objective_s: The recovery time objective in seconds, above 0 and finite: a slower restore fails the drill.
        backup_id: The backup to drill: an id from the catalog, or 'latest'.
    """
    logger = get_run_logger()
    with (
        fail_fast_on_permanent_errors(),
        RunReport("drill", "restore drill", target) as report,
        ExitStack() as lock_stack,
        DrillFailureAlert(report) as alert,
    ):
        target_block, engine, repo, manifest, ctx = open_backup(target, repository, backup_id)
        report.about(engine.name, target_block.name, manifest)
        lock_stack.enter_context(target_lock(repo, engine.name, target_block.name, "drill", log=logger.warning))
        still_there(repo, manifest)  # not pruned while this run waited for the lock
        result = drill_backup(engine, ctx, manifest)
        results, seconds = result.comparison.tables, result.seconds
        # comparison.mismatches, not status != "match": a physical restore lists unlogged tables as
        # "expected empty (unlogged)" (correct: PostgreSQL does not WAL-log their rows) in the artifact.
        mismatched = result.comparison.mismatches
        unlogged_empty = [t for t in results if t.status == UNLOGGED_EMPTY]
        rto_met = seconds <= rto_objective_s
        rows = [t.as_row() for t in results]
        rows.append(
            {
                "database": "(all)",
                "table": f"RTO {human_duration(seconds)} / objective {objective_duration(rto_objective_s)}",
                "expected_rows": None,
                "actual_rows": None,
                "status": "met" if rto_met else "MISSED",
            }
        )
        table_key = artifact_key("drill", engine.name, target_block.name)
        unless_api_down(
            f"table artifact {table_key} not published",
            create_table_artifact,
            rows,
            key=table_key,
            description=f"Restore drill of {manifest.id}",
        )
        ok = rto_met and not mismatched
        alert.details.update(
            seconds=seconds, rto_objective_s=rto_objective_s, mismatched=[f"{t.database}.{t.table}" for t in mismatched]
        )
        detail = f"{result.comparison.summary()}, restore {human_duration(seconds)}"
        if not rto_met:
            detail += f": RTO missed (objective {objective_duration(rto_objective_s)})"
        if unlogged_empty:
            detail += (
                f"; {len(unlogged_empty)} unlogged tables came back empty, as PostgreSQL restores them: "
                + ", ".join(f"{t.database}.{t.table}" for t in unlogged_empty[:10])
            )
        record_check(
            repo, manifest, "drill", ok, detail, seconds=float(seconds), rto_objective_s=float(rto_objective_s)
        )
        emit_backup_event(
            "drilled",
            manifest,
            {
                "ok": ok,
                "seconds": seconds,
                "rto_objective_s": rto_objective_s,
                "mismatched": [f"{t.database}.{t.table}" for t in mismatched],
            },
        )
        emit_backup_event("restored", manifest, {"drill": True, "seconds": seconds})
        publish_catalog(repo, engine.name, target_block.name)
        logger.info(f"drill of {manifest.id}: {detail}, RTO objective {objective_duration(rto_objective_s)}")
        for note in result.notes:  # e.g. subscriptions restored without their slot
            logger.info(note)
        summary = drill_summary(
            manifest.id,
            f"{engine.name}/{target_block.name}",
            seconds,
            rto_objective_s,
            result.comparison.summary(),
            [f"{t.database}.{t.table} ({t.status})" for t in mismatched],
        )
        summary.details += [f"unlogged, came back empty as expected: {t.database}.{t.table}" for t in unlogged_empty]
        summary.details += list(result.notes)
        report.summary = summary  # published by the report when the drill fails below
        if mismatched:
            raise RefusedError(
                f"restore drill of {manifest.id} failed: {len(mismatched)} {result.comparison.noun} differ "
                f"({', '.join(f'{t.database}.{t.table}' for t in mismatched[:5])})"
            )
        if not rto_met:
            raise RefusedError(
                f"restore drill of {manifest.id} missed the RTO: restore took {human_duration(seconds)}, "
                f"objective {objective_duration(rto_objective_s)}"
            )
    outcome = {
        "backup_id": manifest.id,
        "seconds": seconds,
        "rto_met": rto_met,
        "tables": len(results),  # compared units, whatever the engine compares (the name is kept for callers)
        "comparison": result.comparison.summary(),
        "restored": result.restored,
        "notes": list(result.notes),
    }
    return report.finish(summary, outcome)
