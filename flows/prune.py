"""prune: apply the repository's retention policy, chain-aware; collect orphaned payload."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import UTC, datetime

from prefect import flow, get_run_logger

from vaultflow.engines import registry
from vaultflow.flows._locks import target_lock
from vaultflow.flows._names import run_name
from vaultflow.flows._report import RunReport
from vaultflow.flows._support import (
    FLOW_RETRIES,
    RepositoryParam,
    TargetParam,
    emit_backup_event,
    fail_fast_on_permanent_errors,
    load_repository,
    publish_catalog,
    publish_per_target,
    repository_targets,
)
from vaultflow.logarchive import open_log_archive
from vaultflow.retention import clock_problems, plan
from vaultflow.summary import prune_summary
from vaultflow.tasks.prune import delete_backup, delete_objects


def prunable_logs(repo, engine: str, target: str, manifests, decisions):
    """(the target's log archive, PrunePlan of units no kept backup can use), or (None, None)
    when the engine has no log archive. Nothing is prunable while no kept backup reads the log:
    the archive may be all that is left (vaultflow.logarchive.LogArchive.prunable)."""
    archive = open_log_archive(engine, repo, target)
    if archive is None:
        return None, None
    return archive, archive.prunable([m for m in manifests if decisions[m.id].keep])


@flow(name="prune", flow_run_name=run_name("prune"), log_prints=True, **FLOW_RETRIES)
def prune(repository: RepositoryParam, target: TargetParam | None = None, dry_run: bool = False) -> dict:
    """Delete what the retention policy does not keep (manifest first, then payload).

    Backups whose recorded time cannot be trusted (a worker's wrong clock, judged against this
    worker's clock and the store's timestamps) are held: kept, in no retention slot, logged as
    warnings and returned under "clock_problems" (id -> why and what to do). Where the target's
    engine has a log archive (PostgreSQL WAL), units no kept backup can use are deleted too;
    their count is "log_units_deleted" (in a dry run: those it would delete; "wal_deleted": the
    same count under its older name).
    With dry_run the plan is published and nothing is deleted. A backup whose manifest cannot
    be read is kept (with its payload), warned about and returned under "unreadable" (manifest
    key -> why); a target written by an engine this worker does not know is left alone and
    returned under "skipped_targets".

    Each target is pruned under its exclusive repository lock: the prune waits (up to the
    repository's lock_wait, then fails retryably) while a backup, verify or restore of it runs.

    Args:
        repository: The BackupRepository block, or its name ('backup-repository/main').
        target: Only this target (a block or its name, or engine/name as `vaultflow list` prints it); default: every target in the repository.
        dry_run: Publish the plan and delete nothing.
    """
    logger = get_run_logger()
    with (
        fail_fast_on_permanent_errors(),
        RunReport("prune", "prune (dry run)" if dry_run else "prune", target, whole_repository=True) as report,
        ExitStack() as lock_stack,
    ):
        block, repo = load_repository(repository)
        report.subject = repo.description  # a target given makes it the subject below
        policy = block.retention_policy()
        now = datetime.now(UTC)
        targets = repository_targets(repo, target)
        if target is not None:
            report.about(*targets[0])
        rows, deleted, kept, orphans, partial, logs_deleted = [], [], [], 0, 0, 0
        held: dict[str, str] = {}  # misdated backups (clock problems) -> why
        unreadable: dict[str, str] = {}  # manifest key -> why it cannot be read (kept, never deleted)
        skipped: dict[str, str] = {}  # engine/target -> why this worker left it alone
        for engine, name in targets:
            if engine not in registry.names():
                why = (
                    f"written by engine {engine!r}, which this worker does not know (known: "
                    f"{', '.join(registry.names())}); nothing of it was touched. Prune it on a worker "
                    "that has that engine installed"
                )
                skipped[f"{engine}/{name}"] = why
                logger.warning(f"{engine}/{name}: {why}")
                rows.append(
                    {
                        "target": f"{engine}/{name}",
                        "backup": "(all)",
                        "kind": "unknown engine",
                        "action": "skip",
                        "reason": why,
                    }
                )
                continue
            lock_stack.close()  # the previous target's lock; a dry run deletes nothing and shares
            lock = lock_stack.enter_context(
                target_lock(repo, engine, name, "prune", exclusive=not dry_run, log=logger.warning)
            )
            catalog = repo.catalog(engine, name)
            # With the store's timestamps: a second clock against a worker whose clock is wrong.
            decisions = plan(catalog.refs(), policy, now)
            misdated = clock_problems(catalog.refs(), now, policy.clock_tolerance)
            for problem in catalog.problems:  # kept: its payload is not an orphan either
                unreadable[problem.key] = problem.message
                logger.warning(f"{problem.key} is unreadable and kept: {problem.message}")
                rows.append(
                    {
                        "target": f"{engine}/{name}",
                        "backup": problem.key,
                        "kind": "UNREADABLE",
                        "action": "keep",
                        "reason": f"manifest cannot be read: {problem.message}",
                    }
                )
            for manifest in reversed(catalog.manifests):
                decision = decisions[manifest.id]
                rows.append(
                    {
                        "target": f"{engine}/{name}",
                        "backup": manifest.id,
                        "kind": manifest.kind.value,
                        "action": "keep" if decision.keep else ("would delete" if dry_run else "delete"),
                        "reason": ", ".join(decision.reasons),
                    }
                )
                (kept if decision.keep else deleted).append(manifest.id)
                if manifest.id in misdated:
                    held[manifest.id] = misdated[manifest.id]
                    logger.warning(f"{engine}/{name} {manifest.id}: {', '.join(decision.reasons)}")
                if not decision.keep and not dry_run:
                    lock.check()  # never delete on a lock that was lost (not refreshed in time)
                    delete_backup(repo, manifest)
                    repo.forget_check(manifest)
                    emit_backup_event("pruned", manifest, {"reasons": list(decision.reasons)})
            stale = repo.orphans(engine, name, policy.orphan_grace, now)
            for info in stale:
                rows.append(
                    {
                        "target": f"{engine}/{name}",
                        "backup": info.key,
                        "kind": "orphan",
                        "action": "would delete" if dry_run else "delete",
                        "reason": f"no manifest (failed or killed run), older than {policy.orphan_grace}",
                    }
                )
            archive, log_plan = prunable_logs(repo, engine, name, catalog.manifests, decisions)
            if archive is not None and log_plan.units:
                rows.append(
                    {
                        "target": f"{engine}/{name}",
                        "backup": f"{archive.title}: {log_plan.units[0]} .. {log_plan.units[-1]}",
                        "kind": archive.stream,
                        "action": "would delete" if dry_run else "delete",
                        "reason": log_plan.reason,
                    }
                )
                if dry_run:
                    logs_deleted += len(log_plan.units)  # what would be deleted, as "deleted" is
                else:
                    lock.check()
                    logs_deleted += archive.delete(log_plan.units)
            orphans += len(stale)
            if stale and not dry_run:
                lock.check()
                delete_objects(repo, [i.key for i in stale])
            if not dry_run:
                partial += repo.sweep_partial(engine, name, now - policy.orphan_grace)
            if not dry_run:
                publish_catalog(repo, engine, name)
        publish_per_target(
            "prune", rows, targets, f"Retention plan for {repo.description} ({'dry run' if dry_run else 'applied'})"
        )
        logger.info(
            f"prune{' (dry run)' if dry_run else ''}: keep {len(kept)}, delete {len(deleted)}, "
            f"orphan objects {orphans}, archived log units {logs_deleted}, interrupted writes removed {partial}"
        )
    result = {
        "kept": kept,
        "deleted": deleted,
        "orphan_objects": orphans,
        "partial_writes_removed": partial,
        "clock_problems": held,
        "unreadable": unreadable,
        "skipped_targets": skipped,
        "log_units_deleted": logs_deleted,
        "wal_deleted": logs_deleted,
        "dry_run": dry_run,
    }
    return report.finish(prune_summary(result, [f"{e}/{n}" for e, n in targets], repo.description), result)
