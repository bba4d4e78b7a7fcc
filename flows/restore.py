"""restore: bring a backup back (checksums verified while streaming) and compare fingerprints."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from prefect import flow, get_run_logger

from vaultflow.engines.base import options_for
from vaultflow.engines.settings import RestoreOptions
from vaultflow.errors import IntegrityError
from vaultflow.flows._locks import still_there, target_lock
from vaultflow.flows._names import run_name
from vaultflow.flows._report import RunReport
from vaultflow.flows._support import (
    FLOW_RETRIES,
    RepositoryParam,
    RestoreOptionsParam,
    TargetParam,
    emit_backup_event,
    fail_fast_on_permanent_errors,
    open_backup,
)
from vaultflow.source import check_restore_selection
from vaultflow.summary import recovery_point, restore_summary
from vaultflow.tasks.restore import restore_backup


@flow(name="restore", flow_run_name=run_name("restore"), log_prints=True, **FLOW_RETRIES)
def restore(
    target: TargetParam,
    repository: RepositoryParam,
    backup_id: str = "latest",
    into: str | None = None,
    overwrite: bool = False,
    databases: list[str] | None = None,
    options: RestoreOptionsParam | None = None,
) -> dict:
    """Restore `backup_id` into a new database (default) or, with overwrite=True, over `into`.

    Nothing existing is touched unless `overwrite` is set; even then the old database is
    replaced only after the restored copy matched the backup's fingerprints.

    What a restore takes beyond these generic parameters is the target's engine's own, typed
    restore options (`options`; its engine class's `restore_options` model, listed in the run
    form one model per engine, each field described):

    - PostgreSQL (`PostgresRestoreOptions`): physical backups restore a whole cluster into
      `into`, a new data directory; with `to_time`, `to_lsn` or `to_name` archived WAL is
      replayed to that point (PITR), else the copy stops at the backup's own consistent point
      and is compared with its fingerprints; `to_timeline` (a number, "latest" or "current")
      is the timeline recovery follows. Logical restores by a role that is not a superuser
      need `no_owner` and `no_privileges` (pg_restore's --no-owner / --no-privileges).
    - Redis (`RedisRestoreOptions`): restores go into a scratch redis-server on a free port
      (default, left running; `port` chooses it), into a directory (`into`=DIR), or with
      into="original" (and overwrite=True) back into the target server; `key_pattern`
      (e.g. "user:*") and `into_db` restore only matching keys.
    - ClickHouse (`ClickHouseRestoreOptions`): `tables` restores only those tables, `partitions`
      only those partitions of those tables (table -> partition ids, each compared with its own
      fingerprint), `structure_only` the tables without rows.

    `options` may be a model or a mapping of option name -> value; either is validated against
    the target's engine's model, and an option its engine does not take is a ConfigError
    naming it and the ones it does.

    Returns {"backup_id", "restored": source -> where it went, "recovery_point": where the
    restored data stands (what the restore reached, e.g. an LSN or an oplog time, with the
    point-in-time options as "(asked: ...)"), "timeline": the timeline a physical PostgreSQL
    restore ended on and how (None for other restores), "seconds", "comparison": one row per
    table or unit, "notes"}; the run's state message and summary artifact say the same.

    Args:
        target: The target block, or its name ('postgres-target/prod', 'redis-target/cache', or
            'prod' when one kind alone has a block of that name).
        repository: The BackupRepository block, or its name ('backup-repository/main').
        backup_id: The backup to restore: an id from the catalog, or 'latest'.
        into: Where to restore: PostgreSQL logical a database name (default: a new name),
            physical a new data directory; Redis a directory, or 'original' for the target server.
        overwrite: Replace `into` if it exists, only after the restored copy matched the backup.
        databases: Only these databases of the backup (Redis: 'db0', 'db3', ...); default: all.
            Without it, a backup holding none of the target block's `databases` is refused.
        options: The target's engine's restore options (point-in-time recovery for PostgreSQL,
            key patterns for Redis, ...): choose the model of the target's engine and fill
            in what applies; empty: that engine's defaults.
    """
    logger = get_run_logger()
    with fail_fast_on_permanent_errors(), RunReport("restore", "restore", target) as report, ExitStack() as lock_stack:
        target_block, engine, repo, manifest, ctx = open_backup(target, repository, backup_id)
        report.about(engine.name, target_block.name, manifest)
        engine_options = options_for(engine, as_given(options), target_block.name)
        lock_stack.enter_context(target_lock(repo, engine.name, target_block.name, "restore", log=logger.warning))
        still_there(repo, manifest)  # not pruned while this run waited for the lock
        if not databases:  # another source's backup in this target's catalog: never under this name
            check_restore_selection(manifest, target_block.listed_databases(), f"{engine.name}/{target_block.name}")
        logger.info(f"restoring {manifest.id} of {engine.name}/{target_block.name} from {repo.description}")
        result = restore_backup(engine, ctx, manifest, into, overwrite, databases, engine_options)
        if result.backup_id != manifest.id:  # a point in time before `manifest`: an older backup started it
            manifest = repo.catalog(engine.name, target_block.name).get(result.backup_id)
        set_options = engine_options.model_dump(mode="json", exclude_defaults=True)
        outcome = {
            "backup_id": manifest.id,
            "restored": result.restored,
            "recovery_point": recovery_point(set_options, manifest.finished_at, result.reached),
            "timeline": result.timeline,
            "seconds": result.seconds,
            "comparison": result.comparison.rows(),
            "notes": list(result.notes),
        }
        emit_backup_event(
            "restored",
            manifest,
            {
                "restored": result.restored,
                "recovery_point": outcome["recovery_point"],
                "timeline": result.timeline,
                "seconds": result.seconds,
                "options": set_options,
                "comparison": result.comparison.summary(),
            },
        )
        summary = restore_summary(
            outcome,
            f"{engine.name}/{target_block.name}",
            result.comparison.summary(),
            outcome["recovery_point"],
            set_options,
            ok=result.comparison.ok,
        )
        logger.info(summary.line)
        if not result.comparison.ok:
            report.summary = summary  # published by the report as the run fails
            raise IntegrityError(f"restored data differs from backup {manifest.id}: {result.comparison.summary()}")
    return report.finish(summary, outcome)


def as_given(options: RestoreOptions | dict[str, Any] | None) -> RestoreOptions | dict[str, Any] | None:
    """`options` as options_for takes them. Prefect validates a mapping given for the union
    parameter into the first engine model it fits, which need not be the target's engine's (an
    empty mapping fits every model; two engines may share an option name): a model's explicitly
    set fields go back to a mapping, so the target's engine's model validates them."""
    if isinstance(options, RestoreOptions):
        return options.model_dump(exclude_unset=True)
    return options
