"""restore: bring a backup back (checksums verified while streaming) and compare fingerprints."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Optional, Union

from prefect import flow, get_run_logger

from flows._support import (FLOW_RETRIES, RepositoryParam, TargetParam, emit_backup_event,
                            fail_fast_on_permanent_errors, open_backup,
                            run_name)
from tasks.restore import restore_backup
from vaultflow.engines.postgres.recovery import RecoveryTarget
from vaultflow.errors import ConfigError, IntegrityError


@flow(name="restore", flow_run_name=run_name("restore"), log_prints=True, **FLOW_RETRIES)
def restore(target: TargetParam, repository: RepositoryParam, backup_id: str = "latest",
            into: Optional[str] = None, overwrite: bool = False,
            databases: Optional[list[str]] = None, to_time: Optional[datetime] = None,
            to_lsn: Optional[str] = None, to_name: Optional[str] = None,
            to_timeline: Optional[Union[int, Literal["latest", "current"]]] = None,
            key_pattern: Optional[str] = None, into_db: Optional[int] = None,
            no_owner: bool = False, no_privileges: bool = False) -> dict:
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
    """
    logger = get_run_logger()
    with fail_fast_on_permanent_errors():
        target_block, engine, repo, manifest, ctx = open_backup(target, repository, backup_id)
        logger.info(f"restoring {manifest.id} of {engine.name}/{target_block.name} from {repo.description}")
        target_point = RecoveryTarget(time=to_time, lsn=to_lsn, name=to_name, timeline=to_timeline)
        options = {k: v for k, v in {"key_pattern": key_pattern, "into_db": into_db}.items() if v is not None}
        if options and engine.name != "redis":
            raise ConfigError("key_pattern and into_db apply to Redis targets only")
        if no_owner or no_privileges:
            if engine.name != "postgres":
                raise ConfigError("no_owner and no_privileges apply to PostgreSQL targets only")
            options.update(no_owner=no_owner, no_privileges=no_privileges)
        result = restore_backup(engine, ctx, manifest, into, overwrite, databases, target_point, options)
        emit_backup_event("restored", manifest, {"restored": result.restored, "seconds": result.seconds,
                                                 "recovery_target": target_point.settings(),
                                                 "comparison": result.comparison.summary()})
        logger.info(f"restored {result.restored} in {result.seconds:.1f} s; {result.comparison.summary()}")
        if not result.comparison.ok:
            raise IntegrityError(f"restored data differs from backup {manifest.id}: {result.comparison.summary()}")
    return {"backup_id": manifest.id, "restored": result.restored, "seconds": result.seconds,
            "comparison": result.comparison.rows(), "notes": list(result.notes)}
