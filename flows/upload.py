"""upload: copy committed backups to another repository (back up locally, then send to S3)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from vaultflow.errors import NotFoundError, RefusedError
from vaultflow.flows._names import run_name
from vaultflow.flows._report import RunReport
from vaultflow.flows._support import (
    FLOW_RETRIES,
    ProgressReporter,
    RepositoryParam,
    TargetParam,
    emit_backup_event,
    fail_fast_on_permanent_errors,
    load_repository,
    publish_per_target,
    repository_targets,
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
        target: Only this target's backups (a target block or its name, or engine/name as `vaultflow list` prints it); default: every target
            of the source repository.
        backup_id: Only this backup ('latest' or an id) and the parents it needs to restore;
            default: every backup the destination does not hold yet.
    """
    logger = get_run_logger()
    with (
        fail_fast_on_permanent_errors(),
        RunReport("upload", "upload", target, whole_repository=True) as report,
    ):
        _, src = load_repository(source)
        _, dst = load_repository(destination)
        report.title = f"upload to {dst.description}"
        if src.description == dst.description:
            raise RefusedError(f"source and destination are the same repository ({src.description})")
        targets = repository_targets(src, target)
        if target is not None:
            report.about(*targets[0])
        if backup_id not in (None, "latest") and target is None:
            targets = [t for t in targets if any(m.id == backup_id for m in src.catalog(*t).manifests)]
            if not targets:
                raise NotFoundError(f"backup {backup_id} is in no target of {src.description}; see `vaultflow list`")
        copies = []
        with ProgressReporter(f"upload to {dst.description}") as progress:
            for engine, name in targets:
                copies += copy_target(src, dst, engine, name, backup_id, progress, logger.warning)
        rows = [
            {
                "target": f"{m.engine}/{m.target}",
                "backup": m.id,
                "kind": m.kind.value,
                "sent": len(r.copied),
                "already_there": len(r.skipped),
                "bytes_sent": human_size(r.bytes_copied),
            }
            for m, r in copies
        ]
        publish_per_target("upload", rows, targets, f"Backups copied from {src.description} to {dst.description}")
    result = {
        "copied": [m.id for m, r in copies if not r.already_there],
        "already_there": [m.id for m, r in copies if r.already_there],
        "objects_sent": sum(len(r.copied) for _, r in copies),
        "objects_skipped": sum(len(r.skipped) for _, r in copies),
        "bytes_sent": sum(r.bytes_copied for _, r in copies),
    }
    run_summary = upload_summary(result, src.description, dst.description)
    logger.info(run_summary.line)
    return report.finish(run_summary, result)


def copy_target(src, dst, engine: str, name: str, backup_id: str | None, progress, warn) -> list:
    """Copy what `dst` lacks of target engine/name (backups_to_copy), one upload task per backup;
    [(manifest, UploadResult), ...] in order, a vaultflow.backup.uploaded event for each one sent.
    The source's shared lock keeps its prune from deleting what is being copied; the
    destination's backup lock keeps other backups and uploads from writing it meanwhile."""
    copies = []
    with src.locked(engine, name, "upload", log=warn), dst.locked(engine, name, log=warn):
        for manifest in backups_to_copy(src.catalog(engine, name), dst.catalog(engine, name), backup_id):
            result = upload_task(src, dst, manifest, progress)
            copies.append((manifest, result))
            if not result.already_there:
                payload = {
                    "destination": dst.description,
                    "objects_sent": len(result.copied),
                    "bytes_sent": result.bytes_copied,
                }
                emit_backup_event("uploaded", manifest, payload)
    return copies
