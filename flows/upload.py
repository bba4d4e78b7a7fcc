"""upload: copy committed backups to another repository (back up locally, then send to S3)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from vaultflow.errors import NotFoundError, RefusedError
from vaultflow.flows._names import run_name
from vaultflow.flows._support import (
    FLOW_RETRIES,
    ProgressReporter,
    RepositoryParam,
    TargetParam,
    emit_backup_event,
    fail_fast_on_permanent_errors,
    finish_run,
    load_repository,
    load_target,
    publish_per_target,
    summary_key,
)
from vaultflow.summary import human_size, upload_summary
from vaultflow.tasks.transfer import upload as upload_task
from vaultflow.transfer import backups_to_copy


@flow(name="upload", flow_run_name=run_name("upload", "source"), log_prints=True, **FLOW_RETRIES)
def upload(
    source: RepositoryParam,
    destination: RepositoryParam,
    target: TargetParam | None = None,
    backup_id: str | None = None,
) -> dict:
    """Copy committed backups from `source` to `destination`, like `restic copy`: every object is
    checked against its manifest's sha256 while it streams, the manifest is written last at the
    destination, and objects already intact there are not sent again (an interrupted upload
    resumes). Backups the destination already holds are left alone.

    Args:
        source: The repository to copy from: a BackupRepository block or its name
            ('backup-repository/local').
        destination: The repository to copy to (e.g. one with an S3 bucket): a BackupRepository
            block or its name. Must not be the source.
        target: Only this target's backups (a target block or its name); default: every target
            of the source repository.
        backup_id: Only this backup ('latest' or an id) and the parents it needs to restore;
            default: every backup the destination does not hold yet.
    """
    logger = get_run_logger()
    with fail_fast_on_permanent_errors():
        _, src = load_repository(source)
        _, dst = load_repository(destination)
        if src.description == dst.description:
            raise RefusedError(f"source and destination are the same repository ({src.description})")
        if target is not None:
            block = load_target(target)
            targets = [(block.engine().name, block.name)]
        else:
            targets = src.targets()
        if backup_id not in (None, "latest") and target is None:
            targets = [t for t in targets if any(m.id == backup_id for m in src.catalog(*t).manifests)]
            if not targets:
                raise NotFoundError(f"backup {backup_id} is in no target of {src.description}; see `vaultflow list`")
        rows, copied, present = [], [], []
        objects_sent = objects_skipped = bytes_sent = 0
        progress = ProgressReporter(f"upload to {dst.description}")
        for engine, name in targets:
            # The source's shared lock keeps its prune from deleting what is being copied; the
            # destination's backup lock keeps other backups and uploads from writing it meanwhile.
            with src.locked(engine, name, "upload", log=logger.warning), dst.locked(engine, name, log=logger.warning):
                pending = backups_to_copy(src.catalog(engine, name), dst.catalog(engine, name), backup_id)
                for manifest in pending:
                    result = upload_task(src, dst, manifest, progress)
                    objects_sent += len(result.copied)
                    objects_skipped += len(result.skipped)
                    bytes_sent += result.bytes_copied
                    (present if result.already_there else copied).append(manifest.id)
                    rows.append(
                        {
                            "target": f"{engine}/{name}",
                            "backup": manifest.id,
                            "kind": manifest.kind.value,
                            "sent": len(result.copied),
                            "already_there": len(result.skipped),
                            "bytes_sent": human_size(result.bytes_copied),
                        }
                    )
                    if not result.already_there:
                        emit_backup_event(
                            "uploaded",
                            manifest,
                            {
                                "destination": dst.description,
                                "objects_sent": len(result.copied),
                                "bytes_sent": result.bytes_copied,
                            },
                        )
        progress.close()
        publish_per_target("upload", rows, targets, f"Backups copied from {src.description} to {dst.description}")
    result = {
        "copied": copied,
        "already_there": present,
        "objects_sent": objects_sent,
        "objects_skipped": objects_skipped,
        "bytes_sent": bytes_sent,
    }
    run_summary = upload_summary(result, src.description, dst.description)
    logger.info(run_summary.line)
    key = summary_key("upload", *targets[0]) if target is not None else summary_key("upload")
    return finish_run(key, run_summary, result)
