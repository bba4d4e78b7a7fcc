"""full-backup: a complete backup of one target into a repository."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows._support import (FLOW_RETRIES, ProgressReporter, RepositoryParam, TargetParam, emit_backup_event,
                            fail_fast_on_permanent_errors, lineage, load_repository, load_target,
                            publish_catalog, run_name)
from tasks.backup import check_target, take_full_backup
from vaultflow.engines.base import BackupContext


@flow(name="full-backup", flow_run_name=run_name("full"), log_prints=True, **FLOW_RETRIES)
def full_backup(target: TargetParam, repository: RepositoryParam) -> dict:
    """Back up every database of `target` into `repository`; the manifest is written last."""
    logger = get_run_logger()
    with fail_fast_on_permanent_errors():
        target_block = load_target(target)
        _, repo = load_repository(repository)
        engine = target_block.engine()
        version = check_target(engine)
        logger.info(f"backing up {engine.name}/{target_block.name} (server {version}) into {repo.description}")
        progress = ProgressReporter(f"full backup of {target_block.name}")
        ctx = BackupContext(repository=repo, lineage=lineage(), log=logger.info, progress=progress)
        with repo.locked(engine.name, target_block.name):
            manifest = take_full_backup(engine, ctx)
        progress.close()
    emit_backup_event("completed", manifest, {"stored_size": manifest.stored_size,
                                              "raw_size": manifest.raw_size})
    publish_catalog(repo, manifest.engine, manifest.target)
    seconds = (manifest.finished_at - manifest.started_at).total_seconds()
    logger.info(f"backup {manifest.id}: {len(manifest.objects)} objects, "
                f"{manifest.raw_size / 1e6:.1f} MB -> {manifest.stored_size / 1e6:.1f} MB in {seconds:.1f} s")
    return {"backup_id": manifest.id, "stored_size": manifest.stored_size, "raw_size": manifest.raw_size,
            "seconds": seconds, "objects": len(manifest.objects)}
