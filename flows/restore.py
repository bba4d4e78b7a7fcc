"""restore: bring a backup back (checksums verified while streaming) and compare fingerprints."""

from __future__ import annotations

from typing import Optional

from prefect import flow, get_run_logger

from flows._support import (FLOW_RETRIES, RepositoryParam, TargetParam, emit_backup_event,
                            fail_fast_on_permanent_errors, open_backup,
                            run_name)
from tasks.restore import restore_backup
from vaultflow.errors import IntegrityError


@flow(name="restore", flow_run_name=run_name("restore"), log_prints=True, **FLOW_RETRIES)
def restore(target: TargetParam, repository: RepositoryParam, backup_id: str = "latest",
            into: Optional[str] = None, overwrite: bool = False,
            databases: Optional[list[str]] = None) -> dict:
    """Restore `backup_id` into a new database (default) or, with overwrite=True, over `into`.

    Nothing existing is touched unless `overwrite` is set; even then the old database is
    replaced only after the restored copy matched the backup's fingerprints.
    """
    logger = get_run_logger()
    with fail_fast_on_permanent_errors():
        target_block, engine, repo, manifest, ctx = open_backup(target, repository, backup_id)
        logger.info(f"restoring {manifest.id} of {engine.name}/{target_block.name} from {repo.description}")
        result = restore_backup(engine, ctx, manifest, into, overwrite, databases)
        emit_backup_event("restored", manifest, {"restored": result.restored, "seconds": result.seconds,
                                                 "comparison": result.comparison.summary()})
        logger.info(f"restored {result.restored} in {result.seconds:.1f} s; {result.comparison.summary()}")
        if not result.comparison.ok:
            raise IntegrityError(f"restored data differs from backup {manifest.id}: {result.comparison.summary()}")
    return {"backup_id": manifest.id, "restored": result.restored, "seconds": result.seconds,
            "comparison": result.comparison.rows()}
