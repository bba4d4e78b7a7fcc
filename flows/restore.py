"""restore: bring a backup back (checksums verified while streaming) and compare fingerprints."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows._locks import still_there, target_lock
from flows._support import (
    FLOW_RETRIES,
    RepositoryParam,
    TargetParam,
    emit_backup_event,
    fail_fast_on_permanent_errors,
    open_backup,
    run_name,
)
from tasks.restore import restore_backup
from vaultflow.engines.base import options_for
from vaultflow.errors import ConfigError, IntegrityError


@flow(name="restore", flow_run_name=run_name("restore"), log_prints=True, **FLOW_RETRIES)
def restore(
    target: TargetParam,
    repository: RepositoryParam,
    backup_id: str = "latest",
    into: str | None = None,
    overwrite: bool = False,
    databases: list[str] | None = None,
    to_time: datetime | None = None,
    to_lsn: str | None = None,
    to_name: str | None = None,
    to_timeline: int | Literal["latest", "current"] | None = None,
    key_pattern: str | None = None,
    into_db: int | None = None,
    no_owner: bool = False,
    no_privileges: bool = False,
    options: dict[str, Any] | None = None,
) -> dict:
    """Restore `backup_id` into a new database (default) or, with overwrite=True, over `into`.

    Nothing existing is touched unless `overwrite` is set; even then the old database is
    replaced only after the restored copy matched the backup's fingerprints.

    Physical backups restore a whole cluster into `into`, a new data directory; with
    `to_time`, `to_lsn` or `to_name` archived WAL is replayed to that point (PITR), else the
    copy stops at the backup's own consistent point and is compared with its fingerprints.
    `to_timeline` (a number, "latest" or "current": the backup's own) is the timeline recovery
    follows (recovery_target_timeline); alone, it replays that timeline's archived WAL to its end.

    Redis backups restore into a scratch redis-server on a free port (default, left running),
    into a directory (`into`=DIR), or with into="original" (and overwrite=True) back into the
    target server; `key_pattern` (e.g. "user:*") and `into_db` restore only matching keys.

    PostgreSQL logical restores by a role that is not a superuser need `no_owner` (objects and the
    database belong to the restoring role) and `no_privileges` (no GRANTs, no database ACL, no
    role-specific settings), as pg_restore's --no-owner / --no-privileges.

    The engine-specific parameters (from to_time on) are validated into the target's engine's
    typed restore options (its engine class's `restore_options`); one its engine does not take is
    a ConfigError naming it.

    Args:
        target: The target block, or its name ('postgres-target/prod', 'redis-target/cache', or
            'prod' when one kind alone has a block of that name).
        repository: The BackupRepository block, or its name ('backup-repository/main').
        backup_id: The backup to restore: an id from the catalog, or 'latest'.
        into: Where to restore: PostgreSQL logical a database name (default: a new name),
            physical a new data directory; Redis a directory, or 'original' for the target server.
        overwrite: Replace `into` if it exists, only after the restored copy matched the backup.
        databases: Only these databases of the backup (Redis: 'db0', 'db3', ...); default: all.
        to_time: PostgreSQL physical: replay archived WAL up to this time (with a timezone).
        to_lsn: PostgreSQL physical: replay archived WAL up to this WAL location, e.g. '0/3000060'.
        to_name: PostgreSQL physical: replay archived WAL up to this named restore point.
        to_timeline: PostgreSQL physical: the timeline recovery follows: a number, 'latest' or
            'current' (the backup's own); alone, replays its archived WAL to the end.
        key_pattern: Redis: restore only keys matching this pattern (e.g. 'user:*') into the target server.
        into_db: Redis: the db number that the keys of a key_pattern restore go into.
        no_owner: PostgreSQL logical: objects and the database belong to the restoring role
            (needed when it is not a superuser).
        no_privileges: PostgreSQL logical: restore no GRANTs, database ACL or role-specific settings.
        options: Restore options of the target's engine by name, for engines whose options have
            no parameter of their own here (e.g. {"port": 6390} for a Redis scratch server).
    """
    logger = get_run_logger()
    given = {
        name: value
        for name, value in {
            "to_time": to_time,
            "to_lsn": to_lsn,
            "to_name": to_name,
            "to_timeline": to_timeline,
            "key_pattern": key_pattern,
            "into_db": into_db,
            "no_owner": no_owner,
            "no_privileges": no_privileges,
        }.items()
        if value is not None and value is not False
    }
    with fail_fast_on_permanent_errors(), ExitStack() as lock_stack:
        both = sorted(set(given) & set(options or {}))
        if both:
            raise ConfigError(f"restore option {', '.join(both)} given twice: as a parameter and in options")
        target_block, engine, repo, manifest, ctx = open_backup(target, repository, backup_id)
        lock_stack.enter_context(target_lock(repo, engine.name, target_block.name, "restore", log=logger.warning))
        still_there(repo, manifest)  # not pruned while this run waited for the lock
        engine_options = options_for(engine, {**given, **(options or {})}, target_block.name)
        logger.info(f"restoring {manifest.id} of {engine.name}/{target_block.name} from {repo.description}")
        result = restore_backup(engine, ctx, manifest, into, overwrite, databases, engine_options)
        emit_backup_event(
            "restored",
            manifest,
            {
                "restored": result.restored,
                "seconds": result.seconds,
                "options": engine_options.model_dump(mode="json", exclude_defaults=True),
                "comparison": result.comparison.summary(),
            },
        )
        logger.info(f"restored {result.restored} in {result.seconds:.1f} s; {result.comparison.summary()}")
        if not result.comparison.ok:
            raise IntegrityError(f"restored data differs from backup {manifest.id}: {result.comparison.summary()}")
    return {
        "backup_id": manifest.id,
        "restored": result.restored,
        "seconds": result.seconds,
        "comparison": result.comparison.rows(),
        "notes": list(result.notes),
    }
