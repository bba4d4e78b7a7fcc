"""Backup tasks: a backup in steps, each one line over the engine, each its own task run.

    check-target -> plan-backup -> dump-<unit> (one per database / cluster / RDB / AOF) -> finish-backup

A retried `dump` redoes only its unit (its objects are rewritten under the same keys; a put is
atomic); `finish-backup` writes the manifest last, so a run that dies between steps leaves
payload without a manifest: invisible to restore, discarded by the flow or collected by prune.
"""

from __future__ import annotations

from prefect import task

from vaultflow.engines.base import BackupContext, BackupPlan, BackupUnit, UnitResult, dated_by_run, with_source
from vaultflow.manifest import BackupKind, Manifest
from vaultflow.tasks.common import SIDE_EFFECT_TASK


@task(name="check-target", task_run_name="check-target", **SIDE_EFFECT_TASK)
def check_target(engine) -> str:
    """Connect and authenticate; the server's version. A wrong password fails at once."""
    return engine.check()


@task(name="plan-backup", task_run_name="plan-{kind.value}", **SIDE_EFFECT_TASK)
def plan_backup(engine, ctx: BackupContext, kind: BackupKind) -> BackupPlan:
    """The backup's id (dated when the run started: dated_by_run), units and parent
    (Engine.plan_backup), and its source, checked against the target's catalog (with_source:
    ConfigError for another source's target); writes nothing."""
    return with_source(engine, ctx, dated_by_run(engine.plan_backup(ctx, kind), ctx))


@task(name="dump", task_run_name="dump-{unit.label}", **SIDE_EFFECT_TASK)
def dump(engine, ctx: BackupContext, plan: BackupPlan, unit: BackupUnit) -> UnitResult:
    """Stream one unit (a database, the globals, a cluster, an RDB or AOF) into the repository."""
    return engine.dump(ctx, plan, unit)


@task(name="finish-backup", task_run_name="finish-{plan.backup_id}", **SIDE_EFFECT_TASK)
def finish_backup(engine, ctx: BackupContext, plan: BackupPlan, results: list[UnitResult]) -> Manifest:
    """Build the manifest from the units' results and commit it, last."""
    return engine.finish_backup(ctx, plan, results)
